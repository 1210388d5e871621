"""Looking at the program's sockets from the supervisor, without ptrace.

A socket is named by its inode: unlike an fd number it survives dup and fork, and a closed and
reused fd number gets a new one, so records keyed by inode never describe the wrong socket.
pidfd_getfd (Linux 5.6) gives the supervisor its own descriptor for the program's socket:
binding or inspecting it acts on the very socket the program holds.
"""

from __future__ import annotations

import ctypes
import os
import socket

SYS_PIDFD_GETFD = 438
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def socket_inode(tid: int, fd: int) -> int | None:
    """The inode of the socket behind `fd` in task `tid`, or None if it is no socket."""
    try:
        target = os.readlink(f"/proc/{tid}/fd/{fd}")
    except OSError:
        return None
    if not target.startswith("socket:["):
        return None
    return int(target[8:-1])


def borrow_socket(pid: int, fd: int) -> socket.socket:
    """A socket object for a duplicate of process `pid`'s `fd` (close it when done).

    Raises OSError: ESRCH/EBADF when there is no such fd, ENOTSOCK when it is no socket.
    """
    pidfd = os.pidfd_open(pid)
    try:
        duplicate = _libc.syscall(
            ctypes.c_long(SYS_PIDFD_GETFD), ctypes.c_int(pidfd), ctypes.c_int(fd), ctypes.c_uint(0)
        )
        if duplicate < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
    finally:
        os.close(pidfd)
    try:
        return socket.socket(fileno=duplicate)
    except OSError:
        os.close(duplicate)
        raise
