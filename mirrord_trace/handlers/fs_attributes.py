"""Extended attributes, filesystem statistics and inotify watches of remote paths.

- getxattr/listxattr (and the l*, f* forms) of a remote path, or of a descriptor of a local copy
  of one, are answered by the agent from the target's file: a copy is a stand-in for the pod's
  file, so its attributes are the pod file's, as its `fstat` is. The kernel's size rules are
  kept (size 0 asks for the length, a short buffer is ERANGE).
- setxattr/removexattr change the target's file where the policy lets that path be written
  remotely (write mode, read_write); elsewhere a path read from the target is read-only for
  them (EROFS): the attributes being changed are the pod file's, and this machine has no file
  to change.
- statfs/fstatfs (statvfs, df, `stat -f`) describe the target's filesystem.
- inotify_add_watch of a remote path fails with EOPNOTSUPP, with a line saying why: changes in
  the target never reach this machine's inotify, and a watch that never fires would be worse.
"""

from __future__ import annotations

import errno
import struct
import sys
from collections.abc import Callable
from typing import Any

from mirrord_trace.agent_client import RemoteError
from mirrord_trace.handlers.actions import Action, Emulate
from mirrord_trace.handlers.call import SyscallCall
from mirrord_trace.handlers.fs_paths import Handler
from mirrord_trace.handlers.fs_remote import RemoteHandlers
from mirrord_trace.handlers.path_policy import REMOTE
from mirrord_trace.syscall_table import SyscallShape

XATTR_SIZE_MAX = 65536
# struct statfs on x86_64: type, bsize, blocks, bfree, bavail, files, ffree, fsid[2], namelen,
# frsize, flags, spare[4].
_STATFS = struct.Struct("<qqQQQQQiiqqq4q")

_PATH_XATTR = {
    "getxattr": ("path", "ptr", "ptr", "int"),
    "lgetxattr": ("path", "ptr", "ptr", "int"),
    "listxattr": ("path", "ptr", "int"),
    "llistxattr": ("path", "ptr", "int"),
    "setxattr": ("path", "ptr", "ptr", "int", "int"),
    "lsetxattr": ("path", "ptr", "ptr", "int", "int"),
    "removexattr": ("path", "ptr"),
    "lremovexattr": ("path", "ptr"),
}
_FD_XATTR = {
    "fgetxattr": ("fd", "ptr", "ptr", "int"),
    "flistxattr": ("fd", "ptr", "int"),
    "fsetxattr": ("fd", "ptr", "ptr", "int", "int"),
    "fremovexattr": ("fd", "ptr"),
}
XATTR_SYSCALLS = tuple(
    SyscallShape(name, args) for name, args in {**_PATH_XATTR, **_FD_XATTR}.items()
)
STATFS_SYSCALLS = (
    SyscallShape("statfs", ("path", "ptr")),
    SyscallShape("fstatfs", ("fd", "ptr")),
)
INOTIFY_ADD_WATCH = SyscallShape("inotify_add_watch", ("fd", "path", "int"))


def pack_statfs(info: dict[str, Any]) -> bytes:
    fsid = info["fsid"]
    return _STATFS.pack(
        info["type"], info["bsize"], info["blocks"], info["bfree"], info["bavail"],
        info["files"], info["ffree"], fsid[0], fsid[1], info["namelen"], info["frsize"],
        info["flags"], 0, 0, 0, 0,
    )  # fmt: skip


def _sized(data: bytes, buffer: int, size: int, why: str) -> Action:
    """What the kernel answers for a value of `data` into a buffer of `size` bytes."""
    if size == 0:
        return Emulate(len(data), why=why)  # the caller asks how large a buffer it needs
    if len(data) > size:
        return Emulate(-errno.ERANGE, why=why)
    return Emulate(len(data), ((buffer, data),) if data else (), why=why)


class AttributeHandlers(RemoteHandlers):
    inotify_told = False  # the line about inotify is printed once a session

    def _target_of(
        self, call: SyscallCall, name: str, write: bool
    ) -> tuple[str, str] | Action | None:
        """(remote path, rule) the call is about; an action that settles it; None: not ours."""
        if name[0] == "f":  # a descriptor: ours when it is a copy of a remote file
            remote = self.remote
            try:
                local = self.directory_of(call.tid, call.int_arg(0))
            except OSError:
                return None
            path = remote.writers.remote_of(local) or remote.cache.remote_path_of(local)
            if path is None:
                return None
            return path, "a local copy of a remote file"
        return self.remote_path(call, 0, None, write=False)

    def xattr_handler(self, shape: SyscallShape) -> Handler:
        name = shape.name
        prefix = "" if name == "listxattr" else name[0] if name[0] in "lf" else ""
        follow = prefix != "l"  # l*: the symlink itself
        kind = name[len(prefix):]  # getxattr, listxattr, setxattr, removexattr
        changes = kind in ("setxattr", "removexattr")

        def handle(call: SyscallCall) -> Action | None:
            where = self._target_of(call, name, changes)
            if not isinstance(where, tuple):
                return where
            path, rule = where
            why = f"remote: {rule}"
            if changes and self.decide(path, True)[0] != REMOTE:
                return Emulate(-errno.EROFS, why=f"{why}; attribute changes need write mode")
            client = self.remote.client
            try:
                if kind == "listxattr":
                    names = client.request("fs.listxattr", path=path, follow=follow)["names"]
                    listing = b"".join(n + b"\0" for n in names)
                    return _sized(listing, call.args[1], call.int_arg(2), why)
                attribute = call.memory.read_cstring(call.args[1])
                if kind == "getxattr":
                    value = client.request(
                        "fs.getxattr", path=path, name=attribute, follow=follow
                    )["value"]
                    return _sized(value, call.args[2], call.int_arg(3), why)
                self.remote.writers.sync_path(path)
                if kind == "removexattr":
                    client.request("fs.removexattr", path=path, name=attribute, follow=follow)
                    return Emulate(0, why=why)
                size = call.int_arg(3)
                if not 0 <= size <= XATTR_SIZE_MAX:
                    return Emulate(-errno.E2BIG, why=why)
                value = call.memory.read(call.args[2], size) if size else b""
                client.request(
                    "fs.setxattr", path=path, name=attribute, value=value,
                    flags=call.int_arg(4) & 0xFFFFFFFF, follow=follow,
                )  # fmt: skip
                return Emulate(0, why=why)
            except RemoteError as error:
                return self.failed(error, rule)

        return handle

    def statfs_handler(self, shape: SyscallShape) -> Handler:
        name = shape.name

        def handle(call: SyscallCall) -> Action | None:
            where = self._target_of(call, name, False)
            if not isinstance(where, tuple):
                return where
            path, rule = where
            try:
                info = self.remote.client.request("fs.statfs", path=path)["statfs"]
            except RemoteError as error:
                return self.failed(error, rule)
            return Emulate(0, ((call.args[1], pack_statfs(info)),), why=f"remote: {rule}")

        return handle

    def inotify_add_watch(self, call: SyscallCall) -> Action | None:
        where = self.remote_path(call, 1, None, False)
        if not isinstance(where, tuple):
            return where
        path, rule = where
        if not self.inotify_told:
            self.inotify_told = True
            print(
                f"mirrord-trace: inotify cannot watch {path}: it is a path in the target, whose "
                "changes never reach this machine's inotify (EOPNOTSUPP; see docs/fs.md)",
                file=sys.stderr,
                flush=True,
            )
        why = f"remote: {rule}; inotify does not see the target's changes"
        return Emulate(-errno.EOPNOTSUPP, why=why)


def attribute_traps(handlers: AttributeHandlers) -> list[tuple[SyscallShape, Handler]]:
    """The syscalls of this module and their handlers."""
    traps: list[tuple[SyscallShape, Callable[[SyscallCall], Action | None]]] = [
        (shape, handlers.xattr_handler(shape)) for shape in XATTR_SYSCALLS
    ]
    traps += [(shape, handlers.statfs_handler(shape)) for shape in STATFS_SYSCALLS]
    traps.append((INOTIFY_ADD_WATCH, handlers.inotify_add_watch))
    return traps
