"""Large remote files from an agent on this machine: take its descriptor, copy nothing.

A local target's agent runs on the same kernel. For a file larger than the inline limit it
reports its own descriptor number; pidfd_getfd(2) gives the supervisor a duplicate, and the
program opens that through /proc/<supervisor>/fd/<n>: the very file inside the target's root,
read at local speed with no byte crossing the connection. The duplicate must be the file the
agent described (same device and inode), which also rules out a remote agent whose pid happens
to exist here; on any failure the session falls back to streaming the content.

MIRRORD_TRACE_FS_SHARE_FDS=0 turns this off (to measure or test the streaming path).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Mapping

SHARE_ENV = "MIRRORD_TRACE_FS_SHARE_FDS"
_SYS_PIDFD_GETFD = 438
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def pidfd_getfd(pidfd: int, target_fd: int) -> int:
    """A duplicate (close-on-exec) of another process's descriptor; raises OSError."""
    fd = _libc.syscall(_SYS_PIDFD_GETFD, pidfd, target_fd, 0)
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return int(fd)


class AgentDescriptors:
    def __init__(self, agent_pid: int | None) -> None:
        self.agent_pid = agent_pid
        self.enabled = agent_pid is not None and os.environ.get(SHARE_ENV, "1") != "0"
        self._pidfd: int | None = None

    def take(self, agent_fd: int, st: Mapping[str, int]) -> int | None:
        """Our duplicate of the agent's `agent_fd`, if it is the file `st` describes."""
        if not self.enabled or self.agent_pid is None:
            return None
        try:
            if self._pidfd is None:
                self._pidfd = os.pidfd_open(self.agent_pid)
            fd = pidfd_getfd(self._pidfd, agent_fd)
        except OSError:
            self.enabled = False  # another machine's agent, or no permission: stream instead
            return None
        info = os.fstat(fd)
        if (info.st_dev, info.st_ino) != (st["dev"], st["ino"]):
            os.close(fd)
            self.enabled = False
            return None
        return fd

    def close(self) -> None:
        if self._pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(self._pidfd)
            self._pidfd = None
