"""Filesystem paths: a trapped call's path made absolute and the policy's verdict on it.

Relative paths are resolved against the cwd or the dirfd (mapped back to the remote path when
those are local stand-ins of remote directories); a target with nothing remote needs only
`PathHandlers.decide_only` (not found, or left to run).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

from mirrord_trace.handlers.actions import ALLOW, Action, Allow, Emulate
from mirrord_trace.handlers.call import SyscallCall
from mirrord_trace.handlers.path_policy import LOCAL, NOT_FOUND, PathPolicy
from mirrord_trace.syscall_table import AT_FDCWD, SyscallShape

Handler = Callable[[SyscallCall], "Action | None"]

AT_SYMLINK_NOFOLLOW = 0x100
AT_EMPTY_PATH = 0x1000
_SEEN_LIMIT = 4096  # distinct absolute paths remembered per syscall


class NotMine(Exception):
    """The path cannot be decided here (unreadable dirfd, empty path): the kernel answers."""


def proc_directory(tid: int, dirfd: int) -> str:
    """The directory a relative path is resolved against: the cwd or the dirfd's target."""
    link = f"/proc/{tid}/cwd" if dirfd == AT_FDCWD else f"/proc/{tid}/fd/{dirfd}"
    return os.readlink(link)


def _needs_normalising(path: str) -> bool:
    return "//" in path or "/." in path or (len(path) > 1 and path.endswith("/"))


class PathHandlers:
    """Turns a trapped call into an absolute path and the policy's verdict on it."""

    def __init__(
        self,
        policy: PathPolicy,
        directory_of: Callable[[int, int], str] = proc_directory,
        explain: bool = False,
        remote_path_of: Callable[[str], str | None] | None = None,
    ) -> None:
        self.policy = policy
        self.directory_of = directory_of
        self.explain = explain  # only --trace needs the rule in words
        # Maps a local stand-in of a remote directory (a cwd, a dirfd) to its remote path.
        self.remote_path_of = remote_path_of

    def absolute(self, call: SyscallCall, path_index: int, dirfd_index: int | None) -> str:
        """The absolute path a call names, as written (`..` and symlinks are the kernel's or
        the agent's to resolve); raises NotMine when the kernel must answer."""
        return self.absolute_from(call.memory.read_cstring(call.args[path_index]), call,
                                  dirfd_index)

    def absolute_from(self, raw: bytes, call: SyscallCall, dirfd_index: int | None) -> str:
        path = os.fsdecode(raw)
        if path[:1] == "/":
            return path
        if not path:
            raise NotMine  # ENOENT, or AT_EMPTY_PATH about the dirfd itself
        dirfd = call.int_arg(dirfd_index) if dirfd_index is not None else AT_FDCWD
        try:
            base = self.directory_of(call.tid, dirfd)
        except OSError:
            raise NotMine from None  # a bad dirfd: the kernel reports the right error
        if self.remote_path_of is not None:
            base = self.remote_path_of(base) or base
        return f"{base.rstrip('/')}/{path}"

    def decide(self, path: str, write: bool) -> tuple[str, str]:
        """The policy's verdict on the path's normal form (patterns see no `//` or `/./`).

        A `..` is resolved by whoever owns the directory it climbs out of: when the path up to
        its first `..` is remote, the whole path is the target's to resolve (after a symlink,
        or across one of the target's mount points, `..` is not what the text says), so
        `/app/..` is the target's root and `/app/../etc/x` the target's /etc/x, never this
        machine's.
        """
        if not _needs_normalising(path):
            return self.policy.decide(path, write)
        parts = path.split("/")
        if ".." in parts:
            before = os.path.normpath("/".join(parts[: parts.index("..")]) or "/")
            verdict, rule = self.policy.decide(before, write)
            if verdict != LOCAL:
                return verdict, f"{rule} (`..` after {before} is resolved in the target)"
        return self.policy.decide(os.path.normpath(path), write)

    def local(self, verdict: str, rule: str) -> Action:
        if verdict == NOT_FOUND:
            return Emulate(-errno.ENOENT, why=f"not found: {rule}")
        return Allow(why=f"local: {rule}") if self.explain else ALLOW

    def decide_only(self, shape: SyscallShape) -> Handler:
        """A handler for a target that has nothing remote: not found, or left to run."""
        # This runs at every trapped stop: argument positions are looked up once, here.
        path_index = shape.arg_index("path")
        dirfd_index = shape.arg_index("dirfd")
        assert path_index is not None
        absolute_from, decide, local = self.absolute_from, self.decide, self.local
        # The verdict on an absolute path depends on the path alone: remember the action per
        # path as the program wrote it, so a path seen before costs one dict lookup.
        seen: dict[bytes, Action] = {}

        def handle(call: SyscallCall) -> Action:
            raw = call.memory.read_cstring(call.args[path_index])
            action = seen.get(raw)
            if action is not None:
                return action
            try:
                path = absolute_from(raw, call, dirfd_index)
            except NotMine:
                return ALLOW
            action = local(*decide(path, False))
            if raw[:1] == b"/":
                if len(seen) >= _SEEN_LIMIT:
                    seen.clear()
                seen[raw] = action
            return action

        return handle
