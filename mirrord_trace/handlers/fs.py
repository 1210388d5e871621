"""Filesystem syscalls that name a path: decide local, remote or not found.

The decision itself lives in `PathPolicy`; this module turns a trapped call into an absolute
path and the policy's verdict into an action.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from mirrord_trace.handlers.actions import ALLOW, Action, Allow, Emulate
from mirrord_trace.handlers.call import SyscallCall
from mirrord_trace.syscall_table import AT_FDCWD, FS_PATH_SYSCALLS, SyscallShape

if TYPE_CHECKING:
    from mirrord_trace.session import SessionContext, Trap

Handler = Callable[[SyscallCall], Action]
AT_EMPTY_PATH = 0x1000


class PathPolicy(Protocol):
    def decide(self, path: str) -> tuple[str, str]:
        """('local' | 'remote' | 'not_found', the rule that decided, in words)."""
        ...


def proc_directory(tid: int, dirfd: int) -> str:
    """The directory a relative path is resolved against: the cwd or the dirfd's target."""
    link = f"/proc/{tid}/cwd" if dirfd == AT_FDCWD else f"/proc/{tid}/fd/{dirfd}"
    return os.readlink(link)


class FsPathHandlers:
    """Builds one handler per path syscall, sharing the policy and the directory lookup."""

    def __init__(
        self,
        policy: PathPolicy,
        directory_of: Callable[[int, int], str] = proc_directory,
        explain: bool = False,
    ) -> None:
        self.policy = policy
        self.directory_of = directory_of
        self.explain = explain  # only --trace needs the rule in words

    def absolute_path(self, call: SyscallCall, shape: SyscallShape) -> str:
        path_index = shape.arg_index("path")
        dirfd_index = shape.arg_index("dirfd")
        assert path_index is not None
        return self._absolute(call, path_index, dirfd_index)

    def _absolute(self, call: SyscallCall, path_index: int, dirfd_index: int | None) -> str:
        path = os.fsdecode(call.memory.read_cstring(call.args[path_index]))
        if path[:1] == "/":
            return path
        dirfd = call.int_arg(dirfd_index) if dirfd_index is not None else AT_FDCWD
        base = self.directory_of(call.tid, dirfd)
        return os.path.join(base, path) if path else base

    def handler(self, shape: SyscallShape) -> Handler:
        # This runs at every trapped stop: argument positions are looked up once, here.
        path_index = shape.arg_index("path")
        dirfd_index = shape.arg_index("dirfd")
        atflags_index = shape.arg_index("atflags")
        assert path_index is not None
        absolute = self._absolute
        decide = self.policy.decide
        explain = self.explain

        def handle(call: SyscallCall) -> Action:
            if (
                atflags_index is not None
                and call.args[atflags_index] & AT_EMPTY_PATH
                and call.memory.read(call.args[path_index], 1) == b"\0"
            ):
                return ALLOW  # fstat(fd) in disguise: about an open fd, not a path
            try:
                path = absolute(call, path_index, dirfd_index)
            except OSError:
                return ALLOW  # a bad dirfd: the kernel reports the right error itself
            verdict, rule = decide(path)
            if verdict == "not_found":
                return Emulate(-errno.ENOENT, why=f"not found: {rule}")
            if explain:
                return Allow(why=f"{verdict}: {rule}")
            return ALLOW

        return handle


def traps(context: SessionContext) -> list[Trap]:
    from mirrord_trace.config.model import FsMode
    from mirrord_trace.handlers.path_policy import PathPolicy
    from mirrord_trace.session import Trap

    fs = context.config.feature.fs
    if fs.mode == FsMode.LOCAL:
        return []
    policy = PathPolicy(fs, targetless=True, explain=context.explain)
    handlers = FsPathHandlers(policy, explain=context.explain)
    return [Trap(shape, handlers.handler(shape)) for shape in FS_PATH_SYSCALLS.values()]
