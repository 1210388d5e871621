"""Serving remote paths: opens through local stand-ins, metadata in one round trip each.

An open of a remote file fetches it (one agent round trip: metadata and content together) into
a local copy, or takes the agent's own descriptor when the agent runs on this machine, and
rewrites the path argument to it: reads, seeks and mmap then run natively. A remote directory
becomes a skeleton (its entries) so that getdents64 runs natively; chdir into it changes into
the skeleton, and getcwd names the remote directory. stat, access and readlink are answered
by the agent and written into the program's memory.
"""

from __future__ import annotations

import errno
import os
import struct
import sys
from collections.abc import Callable

from mirrord_trace.agent_client import AgentClient, AgentLost, RemoteError
from mirrord_trace.fs.cache import LocalCache
from mirrord_trace.fs.remote_files import RemoteFiles
from mirrord_trace.fs.stat_struct import pack_stat, pack_statx
from mirrord_trace.fs.writers import Writers
from mirrord_trace.handlers.actions import ALLOW, Action, Emulate, OpenInstead, Rewrite
from mirrord_trace.handlers.call import SyscallCall
from mirrord_trace.handlers.fs_hints import ExistsHere
from mirrord_trace.handlers.fs_paths import (
    AT_EMPTY_PATH,
    AT_SYMLINK_NOFOLLOW,
    Handler,
    NotMine,
    PathHandlers,
    proc_directory,
)
from mirrord_trace.handlers.path_policy import REMOTE, PathPolicy
from mirrord_trace.syscall_table import AT_FDCWD, SyscallShape

O_TMPFILE_BIT = 0o20000000  # __O_TMPFILE
_WRITE_OPEN_FLAGS = os.O_CREAT | os.O_TRUNC | os.O_APPEND | O_TMPFILE_BIT
_OPEN_HOW = struct.Struct("<QQQ")  # struct open_how: flags, mode, resolve
GETCWD = SyscallShape("getcwd", ("ptr", "int"))


def umask_of(tid: int) -> int:
    with open(f"/proc/{tid}/status", "rb") as status:
        for line in status:
            if line.startswith(b"Umask:"):
                return int(line.split()[1], 8)
    return 0o022


def open_writes(flags: int) -> bool:
    return flags & os.O_ACCMODE != os.O_RDONLY or bool(flags & _WRITE_OPEN_FLAGS)


def errno_of(error: RemoteError) -> int:
    # The agent is gone: every remote operation from now on is an I/O error for the program.
    return errno.EIO if isinstance(error, AgentLost) else error.errno


class RemoteFs:
    """The session's remote filesystem state: the cache, read copies and writers."""

    def __init__(self, client: AgentClient) -> None:
        self.client = client
        self.cache = LocalCache()
        self.files = RemoteFiles(client, self.cache)
        self.writers = Writers(client, self.cache, self.files)
        self.exists_here = ExistsHere()  # one per session: its lines are rate-limited

    def close(self) -> None:
        try:
            self.writers.close()
        finally:
            self.files.close()
            self.cache.close()


class RemoteHandlers(PathHandlers):
    def __init__(
        self,
        policy: PathPolicy,
        remote: RemoteFs,
        directory_of: Callable[[int, int], str] = proc_directory,
        explain: bool = False,
    ) -> None:
        super().__init__(policy, directory_of, explain, remote.cache.remote_path_of)
        self.remote = remote
        self.exists_here = remote.exists_here

    def failed(self, error: RemoteError, rule: str, path: str | None = None) -> Action:
        """The program's answer for a failed remote operation; a lookup of `path` that the
        target answered with ENOENT says so when this machine has that path."""
        code = errno_of(error)
        why = f"remote: {rule}"
        if code == errno.ENOENT and path is not None:
            why += self.exists_here.why(path, rule)
        return Emulate(-code, why=why)

    def remote_path(
        self, call: SyscallCall, path_index: int, dirfd_index: int | None, write: bool
    ) -> tuple[str, str] | Action:
        """(path, the deciding rule) when the call names a path in the target; otherwise the
        action that settles it here: the kernel's (a path only it can resolve), local, or not
        found."""
        try:
            path = self.absolute(call, path_index, dirfd_index)
        except NotMine:
            return ALLOW
        verdict, rule = self.decide(path, write)
        if verdict != REMOTE:
            return self.local(verdict, rule)
        return path, rule

    # -- opens --
    def open_handler(self, shape: SyscallShape) -> Handler:
        path_index = shape.arg_index("path")
        dirfd_index = shape.arg_index("dirfd")
        assert path_index is not None
        name = shape.name
        flags_index = shape.arg_index("oflags")
        remote_path = self.remote_path

        def handle(call: SyscallCall) -> Action:
            if name == "creat":
                flags = os.O_CREAT | os.O_WRONLY | os.O_TRUNC
            elif name == "openat2":
                flags = _OPEN_HOW.unpack(call.memory.read(call.args[2], _OPEN_HOW.size))[0]
            else:
                assert flags_index is not None
                flags = call.args[flags_index] & 0xFFFFFFFF
            write = open_writes(flags)
            where = remote_path(call, path_index, dirfd_index, write)
            if not isinstance(where, tuple):
                return where
            path, rule = where
            return self._open_remote(call, name, path_index, path, flags, write, rule)

        return handle

    def _open_remote(
        self,
        call: SyscallCall,
        name: str,
        path_index: int,
        path: str,
        flags: int,
        write: bool,
        rule: str,
    ) -> Action:
        remote = self.remote
        if flags & O_TMPFILE_BIT:
            return Emulate(-errno.EOPNOTSUPP, why=f"remote: {rule}: no O_TMPFILE in the target")
        remote.writers.poll()
        # The agent followed (or refused) symlinks already; stand-ins are never symlinks but
        # may be /proc magic links, which O_NOFOLLOW would refuse.
        local_flags = flags & ~os.O_NOFOLLOW
        release = None
        try:
            local = remote.writers.shared_copy(path, append_only=append_only(flags))
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
            return self.failed(error, rule, path)
        except OSError as error:  # the local copy could not be made (disk full...)
            return Emulate(-(error.errno or errno.EIO), why=f"remote: {rule}: local copy failed")
        why = f"remote: {rule}"
        on_exit = None
        if release is not None:
            # Once the program has its own descriptor, the supervisor's duplicate can go.
            def on_exit(result: int, release: Callable[[], None] = release) -> None:
                release()

        new_path = os.fsencode(local) + b"\0"
        args: dict[int, int | bytes] = {path_index: new_path}
        mode = self._mode_arg(call, name) if local_flags & os.O_CREAT else 0
        if name == "openat2":
            # resolve flags cleared: the path was resolved in the target already.
            args.update({2: _OPEN_HOW.pack(local_flags, mode, 0), 3: _OPEN_HOW.size})
        elif local_flags != flags and name != "creat":
            args[path_index + 1] = local_flags
        open_flags = local_flags if name != "creat" else os.O_CREAT | os.O_WRONLY | os.O_TRUNC
        return OpenInstead(
            os.fsencode(local), open_flags, mode, Rewrite(args, on_exit=on_exit, why=why),
            on_done=on_exit, why=why,
        )

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
        absolute, decide, local = self.absolute, self.decide, self.local
        files = self.remote.files

        def handle(call: SyscallCall) -> Action:
            try:
                path = absolute(call, path_index, dirfd_index)
            except NotMine:
                # glibc's fstat(fd) is newfstatat(fd, "", AT_EMPTY_PATH): a stand-in of a
                # remote file answers with the remote metadata, so that comparing it with a
                # stat of the path (shutil.rmtree does) finds the same device and inode.
                if (
                    atflags_index is None
                    or not call.args[atflags_index] & AT_EMPTY_PATH
                    or not files.stand_ins  # nothing remote opened yet: spare the readlink
                ):
                    return ALLOW
                assert dirfd_index is not None
                try:
                    target = self.directory_of(call.tid, call.int_arg(dirfd_index))
                except OSError:
                    return ALLOW
                st = files.stat_of_stand_in(target)
                if st is None:
                    return ALLOW
                why = "remote: metadata of the stand-in's remote file"
                return Emulate(0, ((call.args[buffer_index], pack(st)),), why=why)
            verdict, rule = decide(path, False)
            if verdict != REMOTE:
                return local(verdict, rule)
            follow = name != "lstat" and not (
                atflags_index is not None and call.args[atflags_index] & AT_SYMLINK_NOFOLLOW
            )
            remote = self.remote
            try:
                remote.writers.sync_path(path)
                st = remote.client.request("fs.stat", path=path, follow=follow)["stat"]
            except RemoteError as error:
                return self.failed(error, rule, path)
            return Emulate(0, ((call.args[buffer_index], pack(st)),), why=f"remote: {rule}")

        return handle

    def access_handler(self, shape: SyscallShape) -> Handler:
        dirfd_index = shape.arg_index("dirfd")
        path_index = shape.arg_index("path")
        atflags_index = shape.arg_index("atflags")
        mode_index = shape.arg_index("mode")
        assert path_index is not None and mode_index is not None
        remote_path = self.remote_path

        def handle(call: SyscallCall) -> Action:
            where = remote_path(call, path_index, dirfd_index, False)
            if not isinstance(where, tuple):
                return where
            path, rule = where
            follow = not (
                atflags_index is not None and call.args[atflags_index] & AT_SYMLINK_NOFOLLOW
            )
            remote = self.remote
            try:
                remote.client.request(
                    "fs.access", path=path, mode=call.int_arg(mode_index) & 0o7, follow=follow
                )
            except RemoteError as error:
                return self.failed(error, rule, path)
            return Emulate(0, why=f"remote: {rule}")

        return handle

    def readlink_handler(self, shape: SyscallShape) -> Handler:
        dirfd_index = shape.arg_index("dirfd")
        path_index = shape.arg_index("path")
        assert path_index is not None
        buffer_index, size_index = path_index + 1, path_index + 2
        remote_path = self.remote_path

        def handle(call: SyscallCall) -> Action:
            where = remote_path(call, path_index, dirfd_index, False)
            if not isinstance(where, tuple):
                return where
            path, rule = where
            size = call.int_arg(size_index)
            if size <= 0:
                return Emulate(-errno.EINVAL, why=f"remote: {rule}")
            remote = self.remote
            try:
                target = remote.client.request("fs.readlink", path=path)["target"]
            except RemoteError as error:
                return self.failed(error, rule, path)
            data = os.fsencode(target)[:size]  # readlink(2) truncates silently, no NUL
            return Emulate(len(data), ((call.args[buffer_index], data),), why=f"remote: {rule}")

        return handle

    # -- the working directory --
    def chdir_handler(self, shape: SyscallShape) -> Handler:
        remote_path = self.remote_path

        def handle(call: SyscallCall) -> Action:
            where = remote_path(call, 0, None, False)
            if not isinstance(where, tuple):
                return where
            path, rule = where
            remote = self.remote
            try:
                # The kernel's cwd becomes the skeleton standing for the remote directory.
                skeleton = remote.files.open_for_read(path, os.O_DIRECTORY, list_entries=False)
            except RemoteError as error:
                return self.failed(error, rule, path)
            return Rewrite({0: os.fsencode(skeleton.path) + b"\0"}, why=f"remote: {rule}")

        return handle

    def getcwd(self, call: SyscallCall) -> Action | None:
        """getcwd in a remote directory names the remote directory, not its local stand-in."""
        remote = self.remote
        try:
            cwd = self.directory_of(call.tid, AT_FDCWD)
        except OSError:
            return None
        remote_cwd = remote.cache.remote_path_of(cwd)
        if remote_cwd is None:
            return None
        # chdir("..") in a remote directory went where the target's `..` leads; the name
        # drops the `..` the way a shell's `cd ..` does (see docs/fs.md, Limits).
        data = os.fsencode(os.path.normpath(remote_cwd)) + b"\0"
        if len(data) > call.args[1]:
            return Emulate(-errno.ERANGE, why="remote working directory")
        return Emulate(len(data), ((call.args[0], data),), why="remote working directory")


def append_only(flags: int) -> bool:
    """An open that can only append: its copy needs none of the file's old content."""
    return flags & os.O_ACCMODE == os.O_WRONLY and bool(flags & os.O_APPEND)


def report_agent_loss(error: AgentLost) -> None:
    print(
        f"mirrord-trace: error: lost the connection to the agent: {error.message} "
        "(remote file operations now fail with EIO; restart mirrord-trace)",
        file=sys.stderr,
        flush=True,
    )



