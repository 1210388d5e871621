"""Changing the target's files: write-mode syscalls and paths in `read_write`.

Opens for writing are handled with the other opens (handlers.fs_remote, fs.writers); here are
the calls that change names, sizes and metadata: each is one agent round trip in the target,
after any pending data of the same path has been written back. rename and link need both
paths remote (or both local): across the two, like across filesystems, they fail with EXDEV.
"""

from __future__ import annotations

import errno
import os
import struct

from mirrord_trace.agent_client import RemoteError
from mirrord_trace.handlers.actions import ALLOW, Action, Emulate
from mirrord_trace.handlers.call import SyscallCall
from mirrord_trace.handlers.fs_paths import AT_SYMLINK_NOFOLLOW, Handler, NotMine
from mirrord_trace.handlers.fs_remote import RemoteFs, RemoteHandlers, umask_of
from mirrord_trace.handlers.path_policy import LOCAL, NOT_FOUND, REMOTE
from mirrord_trace.syscall_table import SyscallShape

AT_REMOVEDIR = 0x200
AT_SYMLINK_FOLLOW = 0x400
_TIMESPECS = struct.Struct("<qqqq")

# Calls that name a path and change the target; the two-path ones (rename, link) included.
FS_WRITE_SYSCALLS = (
    SyscallShape("mkdir", ("path", "mode")),
    SyscallShape("mkdirat", ("dirfd", "path", "mode")),
    SyscallShape("unlink", ("path",)),
    SyscallShape("unlinkat", ("dirfd", "path", "atflags")),
    SyscallShape("rmdir", ("path",)),
    SyscallShape("rename", ("path", "path")),
    SyscallShape("renameat", ("dirfd", "path", "dirfd", "path")),
    SyscallShape("renameat2", ("dirfd", "path", "dirfd", "path", "int")),
    SyscallShape("truncate", ("path", "int")),
    SyscallShape("chmod", ("path", "mode")),
    SyscallShape("fchmodat", ("dirfd", "path", "mode")),
    SyscallShape("chown", ("path", "int", "int")),
    SyscallShape("lchown", ("path", "int", "int")),
    SyscallShape("fchownat", ("dirfd", "path", "int", "int", "atflags")),
    SyscallShape("utimensat", ("dirfd", "path", "ptr", "atflags")),
    SyscallShape("symlink", ("path", "path")),
    SyscallShape("symlinkat", ("path", "dirfd", "path")),
    SyscallShape("link", ("path", "path")),
    SyscallShape("linkat", ("dirfd", "path", "dirfd", "path", "atflags")),
)
FSYNC_SYSCALLS = (SyscallShape("fsync", ("fd",)), SyscallShape("fdatasync", ("fd",)))
# Size changes through a descriptor: an append-only copy is filled in first (see Writers).
RESIZE_SYSCALLS = (
    SyscallShape("ftruncate", ("fd", "int")),
    SyscallShape("fallocate", ("fd", "int", "int", "int")),
)
# Metadata changes through a descriptor: remote when the descriptor is a copy of a remote file.
FD_CHANGE_SYSCALLS = (
    SyscallShape("fchmod", ("fd", "mode")),
    SyscallShape("fchown", ("fd", "int", "int")),
)
_FD_CHANGE_NAMES = {shape.nr: shape.name for shape in FD_CHANGE_SYSCALLS}


class ChangeHandlers(RemoteHandlers):
    def change_handler(self, shape: SyscallShape) -> Handler:
        name = shape.name
        dirfd_index = shape.arg_index("dirfd")
        # symlink(at) names the new link last; its first argument is the link's text.
        path_index = {"symlink": 1, "symlinkat": 2}.get(name, shape.arg_index("path"))
        assert path_index is not None
        remote_path = self.remote_path

        def handle(call: SyscallCall) -> Action:
            if name == "utimensat" and call.args[1] == 0:
                return self.fd_change(call) or ALLOW  # futimens(fd)
            where = remote_path(call, path_index, dirfd_index, True)
            if not isinstance(where, tuple):
                return where
            path, rule = where
            remote = self.remote
            try:
                remote.writers.poll()
                if name == "truncate":
                    length = call.args[1] - (1 << 64) if call.args[1] >> 63 else call.args[1]
                    self._truncate(remote, path, length)
                else:
                    kind, fields = self._change_request(name, call, path, path_index)
                    remote.writers.sync_path(path)
                    remote.client.request(kind, **fields)
                    remote.files.forget(path)
            except RemoteError as error:
                return self.failed(error, rule)
            return Emulate(0, why=f"remote: {rule}")

        return handle

    @staticmethod
    def _change_request(
        name: str, call: SyscallCall, path: str, path_index: int
    ) -> tuple[str, dict[str, object]]:
        """The agent request that makes this change in the target."""
        if name in ("mkdir", "mkdirat"):
            mode = call.args[path_index + 1] & 0o1777 & ~umask_of(call.tid)
            return "fs.mkdir", {"path": path, "mode": mode}
        if name in ("unlink", "unlinkat", "rmdir"):
            directory = name == "rmdir" or (
                name == "unlinkat" and bool(call.args[2] & AT_REMOVEDIR)
            )
            return "fs.unlink", {"path": path, "directory": directory}
        if name in ("chmod", "fchmodat", "fchmod"):
            return "fs.chmod", {"path": path, "mode": call.args[path_index + 1] & 0o7777}
        if name in ("chown", "lchown", "fchownat", "fchown"):
            follow = name in ("chown", "fchown") or (
                name == "fchownat" and not call.args[4] & AT_SYMLINK_NOFOLLOW
            )
            uid, gid = call.int_arg(path_index + 1), call.int_arg(path_index + 2)
            return "fs.chown", {"path": path, "uid": uid, "gid": gid, "follow": follow}
        if name == "utimensat":
            times: list[list[int]] = []
            if call.args[2]:
                a_sec, a_nsec, m_sec, m_nsec = _TIMESPECS.unpack(
                    call.memory.read(call.args[2], _TIMESPECS.size)
                )
                times = [[a_sec, a_nsec], [m_sec, m_nsec]]
            follow = not call.args[3] & AT_SYMLINK_NOFOLLOW
            return "fs.utimens", {"path": path, "times": times, "follow": follow}
        assert name in ("symlink", "symlinkat")
        target = os.fsdecode(call.string_arg(0))
        return "fs.symlink", {"target": target, "path": path}

    @staticmethod
    def _truncate(remote: RemoteFs, path: str, length: int) -> None:
        shared = remote.writers.shared_copy(path)
        if shared is not None:  # the program has it open for writing: change the copy
            try:
                os.truncate(shared, length)
            except OSError as error:
                raise RemoteError(error.errno or errno.EIO, str(error)) from None
            return
        remote.client.request("fs.truncate", path=path, length=length)
        remote.files.forget(path)

    def two_path_handler(self, shape: SyscallShape) -> Handler:
        """rename(at/at2) and link(at): both paths remote, both local, or EXDEV."""
        name = shape.name
        if name in ("rename", "link"):
            old_at, new_at = (0, None), (1, None)
        else:
            old_at, new_at = (1, 0), (3, 2)
        absolute, decide, local = self.absolute, self.decide, self.local

        def handle(call: SyscallCall) -> Action:
            try:
                old = absolute(call, *old_at)
                new = absolute(call, *new_at)
            except NotMine:
                return ALLOW
            old_verdict, old_rule = decide(old, True)
            new_verdict, new_rule = decide(new, True)
            if NOT_FOUND in (old_verdict, new_verdict):
                rule = old_rule if old_verdict == NOT_FOUND else new_rule
                return Emulate(-errno.ENOENT, why=f"not found: {rule}")
            if old_verdict != new_verdict:
                # Like crossing filesystems: mv and cp fall back to copying.
                why = f"{old_verdict}: {old_rule} -> {new_verdict}: {new_rule}"
                return Emulate(-errno.EXDEV, why=why)
            if old_verdict == LOCAL:
                return local(LOCAL, old_rule)
            remote = self.remote
            try:
                remote.writers.sync_path(old)
                if name.startswith("rename"):
                    flags = call.int_arg(4) & 0xFFFFFFFF if name == "renameat2" else 0
                    remote.client.request("fs.rename", old=old, new=new, flags=flags)
                else:
                    follow = name == "linkat" and bool(call.args[4] & AT_SYMLINK_FOLLOW)
                    remote.client.request("fs.link", old=old, new=new, follow=follow)
            except RemoteError as error:
                return self.failed(error, old_rule)
            remote.files.forget(old)
            remote.files.forget(new)
            if name.startswith("rename"):
                remote.writers.renamed(old, new)
            return Emulate(0, why=f"remote: {old_rule}")

        return handle

    def fd_change(self, call: SyscallCall) -> Action | None:
        """fchmod, fchown, futimens of a copy of a remote file: made in the target (when the
        policy lets writes to that path be remote), the copy itself left as it is."""
        remote = self.remote
        try:
            local = self.directory_of(call.tid, call.int_arg(0))
        except OSError:
            return None
        path = remote.writers.remote_of(local) or remote.cache.remote_path_of(local)
        if path is None:
            return None
        verdict, rule = self.decide(path, True)
        if verdict != REMOTE:
            return None
        name = _FD_CHANGE_NAMES.get(call.nr, "utimensat")
        kind, fields = self._change_request(name, call, path, 0)
        try:
            remote.writers.sync_path(path)  # the data first: writing it moves mtime
            remote.client.request(kind, **fields)
        except RemoteError as error:
            return self.failed(error, rule)
        return Emulate(0, why=f"remote: {rule}")

    def resize(self, call: SyscallCall) -> Action | None:
        """ftruncate/fallocate of a copy open for appending only: fill in its holes first."""
        remote = self.remote
        try:
            local = self.directory_of(call.tid, call.int_arg(0))
        except OSError:
            return None
        try:
            remote.writers.before_resize(local)
        except RemoteError as error:
            return Emulate(-error.errno, why="remote: the copy could not be filled in")
        return None

    def fsync(self, call: SyscallCall) -> Action | None:
        """fsync/fdatasync of a remote file open for writing: write it back, fsync there."""
        remote = self.remote
        try:
            local = self.directory_of(call.tid, call.int_arg(0))
        except OSError:
            return None
        result = remote.writers.fsync(local)
        if result is None:
            return None
        return Emulate(result, why="remote: the copy was written back to the target")


