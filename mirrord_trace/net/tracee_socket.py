"""The program's sockets as the supervisor sees them.

`borrow` duplicates one of the program's socket fds into the supervisor (pidfd_getfd): the
duplicate shares the open file description, so connecting or sending through it is what the
program's own socket does, and its flags (O_NONBLOCK) are the program's. The supervisor is the
program's tracer, which is what pidfd_getfd asks for (PTRACE_MODE_ATTACH).

`inode` names a socket without a syscall in the tracee: /proc/<tid>/fd/<fd> reads
"socket:[<inode>]", and the inode stays the same through dup, fork and fd-number reuse by
other files, so it is the key under which relayed sockets are remembered.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import threading

_SYS_PIDFD_GETFD = 438
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_SOCKET_LINK_PREFIX = "socket:["


class TraceeSockets:
    def __init__(self) -> None:
        self._pidfds: dict[int, int] = {}
        self._lock = threading.Lock()

    def borrow(self, tgid: int, fd: int) -> socket.socket:
        """A duplicate of the program's fd as a socket; OSError (ENOTSOCK, EBADF...) if not.

        The caller closes it. It must never be left open: it would keep the program's socket
        alive after the program closed it.
        """
        duplicate = self._getfd(tgid, fd)
        try:
            return socket.socket(fileno=duplicate)
        except OSError:
            os.close(duplicate)
            raise

    def _getfd(self, tgid: int, fd: int) -> int:
        for _ in range(2):
            pidfd = self._pidfd(tgid)
            duplicate = _libc.syscall(_SYS_PIDFD_GETFD, pidfd, fd, 0)
            if duplicate >= 0:
                return int(duplicate)
            code = ctypes.get_errno()
            if code != errno.ESRCH:
                raise OSError(code, f"pidfd_getfd({tgid}, {fd}): {os.strerror(code)}")
            self._forget(tgid)  # the process is gone, or the pid now names another one
        raise OSError(errno.ESRCH, f"process {tgid} is gone")

    def _pidfd(self, tgid: int) -> int:
        with self._lock:
            pidfd = self._pidfds.get(tgid)
            if pidfd is None:
                pidfd = self._pidfds[tgid] = os.pidfd_open(tgid)
            return pidfd

    def _forget(self, tgid: int) -> None:
        with self._lock:
            pidfd = self._pidfds.pop(tgid, None)
        if pidfd is not None:
            os.close(pidfd)

    def close(self) -> None:
        with self._lock:
            pidfds, self._pidfds = list(self._pidfds.values()), {}
        for pidfd in pidfds:
            os.close(pidfd)


def socket_inode(tid: int, fd: int) -> int | None:
    """The inode of the socket behind the thread's fd; None if the fd is not a socket."""
    try:
        link = os.readlink(f"/proc/{tid}/fd/{fd}")
    except OSError:
        return None
    if not link.startswith(_SOCKET_LINK_PREFIX):
        return None
    return int(link[len(_SOCKET_LINK_PREFIX) : -1])


def inodes_of_process(tgid: int) -> set[int]:
    """Inodes of every socket the process has open (empty if it is gone)."""
    found = set()
    try:
        fds = os.listdir(f"/proc/{tgid}/fd")
    except OSError:
        return found
    for name in fds:
        inode = socket_inode(tgid, int(name))
        if inode is not None:
            found.add(inode)
    return found
