"""Whether the target's file requests may run in the event loop or need the thread pool.

A file request on a local filesystem takes microseconds, far less than handing it to a pool
thread and back (two cross-thread wake-ups, ~250 us on a 2-vCPU VM). On a network or FUSE
filesystem a lookup can block for as long as the server likes, which inside the event loop
would stall every other request and stream. So: inline while the target's mount namespace has
no such filesystem mounted anywhere (a symlink could lead into one), the pool otherwise.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

# Filesystems whose operations can block indefinitely on something outside this kernel.
SLOW_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "9p", "afs", "lustre",
     "gfs2", "ocfs2", "davfs", "virtiofs", "fuse", "fuseblk", "ncpfs", "coda"}
)  # fmt: skip
RECHECK_INTERVAL = 5.0

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class Mount:
    mount_point: str
    fstype: str


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as \ooo octal escapes.
    return _OCTAL_ESCAPE.sub(lambda match: chr(int(match.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """The mounts of a /proc/<pid>/mountinfo (proc(5)); malformed lines are skipped."""
    mounts = []
    for line in text.splitlines():
        before, separator, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if separator and len(fields) >= 5 and tail:
            mounts.append(Mount(_unescape(fields[4]), tail[0]))
    return mounts


def is_slow(fstype: str) -> bool:
    return fstype in SLOW_FILESYSTEMS or fstype.startswith("fuse.")


class MountWatch:
    """Answers "may file work run inline?" for one target, re-reading its mounts now and then."""

    def __init__(
        self,
        pid: int,
        clock: Callable[[], float] = time.monotonic,
        interval: float = RECHECK_INTERVAL,
    ) -> None:
        self._path = f"/proc/{pid}/mountinfo"
        self._clock = clock
        self._interval = interval
        self._checked_at = -interval
        self._inline = False

    def inline_ok(self) -> bool:
        now = self._clock()
        if now - self._checked_at >= self._interval:
            self._checked_at = now
            try:
                with open(self._path) as mountinfo:
                    mounts = parse_mountinfo(mountinfo.read())
            except OSError:
                self._inline = False  # cannot tell (target gone?): take the safe path
            else:
                self._inline = not any(is_slow(mount.fstype) for mount in mounts)
        return self._inline
