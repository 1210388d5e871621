"""Filesystem syscalls: decide local / remote / not found per path, and serve the remote ones.

Follow one call: the filter traps `openat(AT_FDCWD, "/app/config.yaml", O_RDONLY)`; the handler
makes the path absolute (relative paths against the cwd or dirfd, mapped back to the remote
path when those are local stand-ins of remote directories), asks the PathPolicy, and then
  - local:      lets the call run unchanged;
  - not found:  skips it with ENOENT;
  - remote:     opens: fetches a local copy (one agent round trip) and rewrites the path
                argument to it; metadata calls (stat, access, readlink): one round trip, the
                answer written into the program's memory; changes (mkdir, unlink, rename,
                truncate): one round trip in the target.
Every handler's `why` names the rule that decided (shown by --trace).
"""

from __future__ import annotations

import errno
import os
import struct
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from mirrord_trace.agent_client import AgentClient, AgentLost, RemoteError
from mirrord_trace.fs.cache import LocalCache
from mirrord_trace.fs.remote_files import RemoteFiles
from mirrord_trace.fs.stat_struct import pack_stat, pack_statx
from mirrord_trace.fs.writers import Writers
from mirrord_trace.handlers.actions import ALLOW, Action, Allow, Emulate, Rewrite
from mirrord_trace.handlers.call import SyscallCall
from mirrord_trace.handlers.path_policy import LOCAL, NOT_FOUND, REMOTE, PathPolicy, Whereabouts
from mirrord_trace.syscall_table import AT_FDCWD, FS_PATH_SYSCALLS, SyscallShape

if TYPE_CHECKING:
    from mirrord_trace.session import SessionContext, Trap

Handler = Callable[[SyscallCall], "Action | None"]

AT_SYMLINK_NOFOLLOW = 0x100
AT_REMOVEDIR = 0x200
AT_EMPTY_PATH = 0x1000
O_TMPFILE_BIT = 0o20000000  # __O_TMPFILE
_WRITE_OPEN_FLAGS = os.O_CREAT | os.O_TRUNC | os.O_APPEND | O_TMPFILE_BIT
_OPEN_HOW = struct.Struct("<QQQ")  # struct open_how: flags, mode, resolve

# Syscalls that change names in a directory or a file's size: remote only when writes may be.
FS_WRITE_SYSCALLS = {
    shape.name: shape
    for shape in (
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
}
AT_SYMLINK_FOLLOW = 0x400
_TIMESPECS = struct.Struct("<qqqq")
GETCWD = SyscallShape("getcwd", ("ptr", "int"))
FSYNC_SYSCALLS = (SyscallShape("fsync", ("fd",)), SyscallShape("fdatasync", ("fd",)))
# Metadata changes through a descriptor: remote when the descriptor is a copy of a remote file.
FD_CHANGE_SYSCALLS = (
    SyscallShape("fchmod", ("fd", "mode")),
    SyscallShape("fchown", ("fd", "int", "int")),
)
_FD_CHANGE_NAMES = {shape.nr: shape.name for shape in FD_CHANGE_SYSCALLS}


class NotMine(Exception):
    """The path cannot be decided here (unreadable dirfd, empty path): the kernel answers."""


def proc_directory(tid: int, dirfd: int) -> str:
    """The directory a relative path is resolved against: the cwd or the dirfd's target."""
    link = f"/proc/{tid}/cwd" if dirfd == AT_FDCWD else f"/proc/{tid}/fd/{dirfd}"
    return os.readlink(link)


def umask_of(tid: int) -> int:
    with open(f"/proc/{tid}/status", "rb") as status:
        for line in status:
            if line.startswith(b"Umask:"):
                return int(line.split()[1], 8)
    return 0o022


def _needs_normalising(path: str) -> bool:
    return "//" in path or "/." in path or (len(path) > 1 and path.endswith("/"))


def open_writes(flags: int) -> bool:
    return flags & os.O_ACCMODE != os.O_RDONLY or bool(flags & _WRITE_OPEN_FLAGS)


def _errno_of(error: RemoteError) -> int:
    # The agent is gone: every remote operation from now on is an I/O error for the program.
    return errno.EIO if isinstance(error, AgentLost) else error.errno


class RemoteFs:
    """The session's remote filesystem state: the cache, read copies and writers."""

    def __init__(self, client: AgentClient) -> None:
        self.client = client
        self.cache = LocalCache()
        self.files = RemoteFiles(client, self.cache)
        self.writers = Writers(client, self.cache, self.files)

    def close(self) -> None:
        try:
            self.writers.close()
        finally:
            self.files.close()
            self.cache.close()


class FsHandlers:
    """Builds one handler per trapped syscall, sharing the policy and the remote state."""

    def __init__(
        self,
        policy: PathPolicy,
        remote: RemoteFs | None = None,
        directory_of: Callable[[int, int], str] = proc_directory,
        explain: bool = False,
    ) -> None:
        self.policy = policy
        self.remote = remote
        self.directory_of = directory_of
        self.explain = explain  # only --trace needs the rule in words

    # -- paths --
    def absolute(self, call: SyscallCall, path_index: int, dirfd_index: int | None) -> str:
        """The absolute path a call names; raises NotMine when the kernel must answer."""
        path = os.fsdecode(call.memory.read_cstring(call.args[path_index]))
        if path[:1] != "/":
            if not path:
                raise NotMine  # ENOENT, or AT_EMPTY_PATH about the dirfd itself
            dirfd = call.int_arg(dirfd_index) if dirfd_index is not None else AT_FDCWD
            try:
                base = self.directory_of(call.tid, dirfd)
            except OSError:
                raise NotMine from None  # a bad dirfd: the kernel reports the right error
            if self.remote is not None:
                base = self.remote.cache.remote_path_of(base) or base
            path = f"{base.rstrip('/')}/{path}"
        return os.path.normpath(path) if _needs_normalising(path) else path

    def _decide(self, path: str, write: bool) -> tuple[str, str]:
        return self.policy.decide(path, write)

    def _local(self, verdict: str, rule: str) -> Action:
        if verdict == NOT_FOUND:
            return Emulate(-errno.ENOENT, why=f"not found: {rule}")
        return Allow(why=f"local: {rule}") if self.explain else ALLOW

    def _failed(self, error: RemoteError, rule: str) -> Action:
        return Emulate(-_errno_of(error), why=f"remote: {rule}")

    # -- opens --
    def open_handler(self, shape: SyscallShape) -> Handler:
        path_index = shape.arg_index("path")
        dirfd_index = shape.arg_index("dirfd")
        assert path_index is not None
        name = shape.name
        flags_index = shape.arg_index("oflags")
        absolute, decide, local = self.absolute, self._decide, self._local

        def handle(call: SyscallCall) -> Action:
            if name == "creat":
                flags = os.O_CREAT | os.O_WRONLY | os.O_TRUNC
            elif name == "openat2":
                flags = _OPEN_HOW.unpack(call.memory.read(call.args[2], _OPEN_HOW.size))[0]
            else:
                assert flags_index is not None
                flags = call.args[flags_index] & 0xFFFFFFFF
            try:
                path = absolute(call, path_index, dirfd_index)
            except NotMine:
                return ALLOW
            write = open_writes(flags)
            verdict, rule = decide(path, write)
            if verdict != REMOTE:
                return local(verdict, rule)
            return self._open_remote(call, name, path_index, path, flags, write, rule)

        return handle

    def _open_remote(
        self, call: SyscallCall, name: str, path_index: int, path: str, flags: int,
        write: bool, rule: str,
    ) -> Action:  # fmt: skip
        remote = self.remote
        assert remote is not None
        if flags & O_TMPFILE_BIT:
            return Emulate(-errno.EOPNOTSUPP, why=f"remote: {rule}: no O_TMPFILE in the target")
        remote.writers.poll()
        local = remote.writers.shared_copy(path)
        # The agent followed (or refused) symlinks already; stand-ins are never symlinks but
        # may be /proc magic links, which O_NOFOLLOW would refuse.
        local_flags = flags & ~os.O_NOFOLLOW
        release = None
        try:
            if local is not None:
                local_flags &= ~(os.O_CREAT | os.O_EXCL)  # it exists: it is open for writing
                if flags & os.O_CREAT and flags & os.O_EXCL:
                    return Emulate(-errno.EEXIST, why=f"remote: {rule}")
            elif write:
                mode = self._mode_arg(call, name) & ~umask_of(call.tid) & 0o7777
                local = remote.writers.open(path, flags, mode)
                local_flags &= ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC)  # done in the target
            else:
                stand_in = remote.files.open_for_read(path, flags, not flags & os.O_PATH)
                local, release = stand_in.path, stand_in.release
        except RemoteError as error:
            return self._failed(error, rule)
        except OSError as error:  # the local copy could not be made (disk full...)
            return Emulate(-(error.errno or errno.EIO), why=f"remote: {rule}: local copy failed")
        why = f"remote: {rule}"
        on_exit = None
        if release is not None:
            def on_exit(result: int, release: Callable[[], None] = release) -> None:
                release()

        new_path = os.fsencode(local) + b"\0"
        args: dict[int, int | bytes] = {path_index: new_path}
        if name == "openat2":
            mode = self._mode_arg(call, name) if local_flags & os.O_CREAT else 0
            # resolve flags cleared: the path was resolved in the target already.
            args.update({2: _OPEN_HOW.pack(local_flags, mode, 0), 3: _OPEN_HOW.size})
        elif local_flags != flags and name != "creat":
            args[path_index + 1] = local_flags
        return Rewrite(args, on_exit=on_exit, why=why)

    @staticmethod
    def _mode_arg(call: SyscallCall, name: str) -> int:
        if name == "openat2":
            return _OPEN_HOW.unpack(call.memory.read(call.args[2], _OPEN_HOW.size))[1]
        index = {"open": 2, "openat": 3, "creat": 1}[name]
        return call.args[index] & 0o7777

    # -- metadata --
    def stat_handler(self, shape: SyscallShape) -> Handler:
        name = shape.name
        dirfd_index = shape.arg_index("dirfd")
        path_index = shape.arg_index("path")
        atflags_index = shape.arg_index("atflags")
        assert path_index is not None
        buffer_index = {"stat": 1, "lstat": 1, "newfstatat": 2, "statx": 4}[name]
        pack = pack_statx if name == "statx" else pack_stat
        absolute, decide, local = self.absolute, self._decide, self._local

        def handle(call: SyscallCall) -> Action:
            try:
                path = absolute(call, path_index, dirfd_index)
            except NotMine:
                return ALLOW  # fstat(fd) in disguise (AT_EMPTY_PATH), or a bad dirfd
            verdict, rule = decide(path, False)
            if verdict != REMOTE:
                return local(verdict, rule)
            follow = name != "lstat" and not (
                atflags_index is not None and call.args[atflags_index] & AT_SYMLINK_NOFOLLOW
            )
            remote = self.remote
            assert remote is not None
            try:
                remote.writers.sync_path(path)
                st = remote.client.request("fs.stat", path=path, follow=follow)["stat"]
            except RemoteError as error:
                return self._failed(error, rule)
            return Emulate(0, ((call.args[buffer_index], pack(st)),), why=f"remote: {rule}")

        return handle

    def access_handler(self, shape: SyscallShape) -> Handler:
        dirfd_index = shape.arg_index("dirfd")
        path_index = shape.arg_index("path")
        atflags_index = shape.arg_index("atflags")
        mode_index = shape.arg_index("mode")
        assert path_index is not None and mode_index is not None
        absolute, decide, local = self.absolute, self._decide, self._local

        def handle(call: SyscallCall) -> Action:
            try:
                path = absolute(call, path_index, dirfd_index)
            except NotMine:
                return ALLOW
            verdict, rule = decide(path, False)
            if verdict != REMOTE:
                return local(verdict, rule)
            follow = not (
                atflags_index is not None and call.args[atflags_index] & AT_SYMLINK_NOFOLLOW
            )
            remote = self.remote
            assert remote is not None
            try:
                remote.client.request(
                    "fs.access", path=path, mode=call.int_arg(mode_index) & 0o7, follow=follow
                )
            except RemoteError as error:
                return self._failed(error, rule)
            return Emulate(0, why=f"remote: {rule}")

        return handle

    def readlink_handler(self, shape: SyscallShape) -> Handler:
        dirfd_index = shape.arg_index("dirfd")
        path_index = shape.arg_index("path")
        assert path_index is not None
        buffer_index, size_index = path_index + 1, path_index + 2
        absolute, decide, local = self.absolute, self._decide, self._local

        def handle(call: SyscallCall) -> Action:
            try:
                path = absolute(call, path_index, dirfd_index)
            except NotMine:
                return ALLOW
            verdict, rule = decide(path, False)
            if verdict != REMOTE:
                return local(verdict, rule)
            size = call.int_arg(size_index)
            if size <= 0:
                return Emulate(-errno.EINVAL, why=f"remote: {rule}")
            remote = self.remote
            assert remote is not None
            try:
                target = remote.client.request("fs.readlink", path=path)["target"]
            except RemoteError as error:
                return self._failed(error, rule)
            data = os.fsencode(target)[:size]  # readlink(2) truncates silently, no NUL
            return Emulate(len(data), ((call.args[buffer_index], data),), why=f"remote: {rule}")

        return handle

    # -- the working directory --
    def chdir_handler(self, shape: SyscallShape) -> Handler:
        absolute, decide, local = self.absolute, self._decide, self._local

        def handle(call: SyscallCall) -> Action:
            try:
                path = absolute(call, 0, None)
            except NotMine:
                return ALLOW
            verdict, rule = decide(path, False)
            if verdict != REMOTE:
                return local(verdict, rule)
            remote = self.remote
            assert remote is not None
            try:
                # The kernel's cwd becomes the skeleton standing for the remote directory.
                skeleton = remote.files.open_for_read(path, os.O_DIRECTORY, list_entries=False)
            except RemoteError as error:
                return self._failed(error, rule)
            return Rewrite({0: os.fsencode(skeleton.path) + b"\0"}, why=f"remote: {rule}")

        return handle

    def getcwd(self, call: SyscallCall) -> Action | None:
        """getcwd in a remote directory names the remote directory, not its local stand-in."""
        remote = self.remote
        assert remote is not None
        try:
            cwd = self.directory_of(call.tid, AT_FDCWD)
        except OSError:
            return None
        remote_cwd = remote.cache.remote_path_of(cwd)
        if remote_cwd is None:
            return None
        data = os.fsencode(remote_cwd) + b"\0"
        if len(data) > call.args[1]:
            return Emulate(-errno.ERANGE, why="remote working directory")
        return Emulate(len(data), ((call.args[0], data),), why="remote working directory")

    # -- changes --
    def change_handler(self, shape: SyscallShape) -> Handler:
        name = shape.name
        dirfd_index = shape.arg_index("dirfd")
        # symlink(at) names the new link last; its first argument is the link's text.
        path_index = {"symlink": 1, "symlinkat": 2}.get(name, shape.arg_index("path"))
        assert path_index is not None
        absolute, decide, local = self.absolute, self._decide, self._local

        def handle(call: SyscallCall) -> Action:
            if name == "utimensat" and call.args[1] == 0:
                return self.fd_change(call) or ALLOW  # futimens(fd)
            try:
                path = absolute(call, path_index, dirfd_index)
            except NotMine:
                return ALLOW
            verdict, rule = decide(path, True)
            if verdict != REMOTE:
                return local(verdict, rule)
            remote = self.remote
            assert remote is not None
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
                return self._failed(error, rule)
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
        absolute, decide, local = self.absolute, self._decide, self._local

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
            assert remote is not None
            try:
                remote.writers.sync_path(old)
                if name.startswith("rename"):
                    flags = call.int_arg(4) & 0xFFFFFFFF if name == "renameat2" else 0
                    remote.client.request("fs.rename", old=old, new=new, flags=flags)
                else:
                    follow = name == "linkat" and bool(call.args[4] & AT_SYMLINK_FOLLOW)
                    remote.client.request("fs.link", old=old, new=new, follow=follow)
            except RemoteError as error:
                return self._failed(error, old_rule)
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
        if remote is None:
            return None
        try:
            local = self.directory_of(call.tid, call.int_arg(0))
        except OSError:
            return None
        path = remote.writers.remote_of(local) or remote.cache.remote_path_of(local)
        if path is None:
            return None
        verdict, rule = self._decide(path, True)
        if verdict != REMOTE:
            return None
        name = _FD_CHANGE_NAMES.get(call.nr, "utimensat")
        kind, fields = self._change_request(name, call, path, 0)
        try:
            remote.writers.sync_path(path)  # the data first: writing it moves mtime
            remote.client.request(kind, **fields)
        except RemoteError as error:
            return self._failed(error, rule)
        return Emulate(0, why=f"remote: {rule}")

    def fsync(self, call: SyscallCall) -> Action | None:
        """fsync/fdatasync of a remote file open for writing: write it back, fsync there."""
        remote = self.remote
        assert remote is not None
        try:
            local = self.directory_of(call.tid, call.int_arg(0))
        except OSError:
            return None
        result = remote.writers.fsync(local)
        if result is None:
            return None
        return Emulate(result, why="remote: the copy was written back to the target")


def _report_agent_loss(error: AgentLost) -> None:
    print(
        f"mirrord-trace: error: lost the connection to the agent: {error.message} "
        "(remote file operations now fail with EIO; restart mirrord-trace)",
        file=sys.stderr,
        flush=True,
    )


_OPEN_NAMES = ("open", "openat", "openat2", "creat")
_STAT_NAMES = ("stat", "lstat", "newfstatat", "statx")
_ACCESS_NAMES = ("access", "faccessat", "faccessat2")
_READLINK_NAMES = ("readlink", "readlinkat")


def _path_handler(handlers: FsHandlers, shape: SyscallShape) -> Handler:
    if shape.name in _OPEN_NAMES:
        return handlers.open_handler(shape)
    if shape.name in _STAT_NAMES:
        return handlers.stat_handler(shape)
    if shape.name in _ACCESS_NAMES:
        return handlers.access_handler(shape)
    if shape.name in _READLINK_NAMES:
        return handlers.readlink_handler(shape)
    if shape.name == "chdir":
        return handlers.chdir_handler(shape)
    if shape.name.startswith(("rename", "link")):
        return handlers.two_path_handler(shape)
    return handlers.change_handler(shape)


def traps(context: SessionContext) -> list[Trap]:
    from mirrord_trace.config.model import FsMode
    from mirrord_trace.session import Trap

    fs = context.config.feature.fs
    if fs.mode == FsMode.LOCAL:
        return []
    where = Whereabouts.current(context.program)
    if context.agent is None:
        # Targetless: nothing is remote; only not_found paths need the tracer.
        policy = PathPolicy(fs, targetless=True, where=where, explain=context.explain)
        handlers = FsHandlers(policy, explain=context.explain)
        return [Trap(s, _path_handler(handlers, s)) for s in FS_PATH_SYSCALLS.values()]
    policy = PathPolicy(fs, where=where, explain=context.explain)
    remote = RemoteFs(context.agent)
    context.end_hooks.append(remote.close)
    if context.agent.on_lost is None:
        context.agent.on_lost = _report_agent_loss
    handlers = FsHandlers(policy, remote, explain=context.explain)
    shapes = [*FS_PATH_SYSCALLS.values(), *FS_WRITE_SYSCALLS.values()]
    result = [Trap(s, _path_handler(handlers, s)) for s in shapes]
    result.append(Trap(GETCWD, handlers.getcwd))
    if policy.can_write_remotely:
        result.extend(Trap(shape, handlers.fsync) for shape in FSYNC_SYSCALLS)
        result.extend(Trap(shape, handlers.fd_change) for shape in FD_CHANGE_SYSCALLS)
    return result
