"""Opening paths inside the target's root directory, confined to it.

Every lookup starts at an fd for /proc/<pid>/root and goes through openat2 with RESOLVE_IN_ROOT:
the kernel treats that fd as "/" for the whole walk, so absolute symlinks, `..` and symlink
chains all stay inside, whatever the target's files contain. Magic links (/proc/*/fd/*,
/proc/*/root) are refused as well, since following them could leave the root.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager

from agent.target.linux import RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS, openat2

_RESOLVE = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS
# RESOLVE_IN_ROOT fails with EAGAIN when a concurrent rename could have raced the walk.
_EAGAIN_RETRIES = 16


class TargetRoot:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        # Holding the fd keeps the target's root reachable even if the path is re-mounted.
        self.fd = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        os.close(self.fd)

    def open(self, path: str, flags: int, mode: int = 0) -> int:
        """An fd for `path` resolved inside the root; `flags` and `mode` are open(2)'s."""
        encoded = os.fsencode(path)
        for _ in range(_EAGAIN_RETRIES):
            try:
                return openat2(self.fd, encoded, flags | os.O_CLOEXEC, _RESOLVE, mode)
            except BlockingIOError:
                continue
        raise OSError(errno.EAGAIN, "path kept changing during lookup", path)

    @contextmanager
    def opened(self, path: str, flags: int) -> Iterator[int]:
        fd = self.open(path, flags)
        try:
            yield fd
        finally:
            os.close(fd)
