"""Raw ptrace(2) calls, bound once with ctypes for the tracer's hot path.

python-ptrace supplies the register layout and the classic request numbers; the seize-era
requests and seccomp options it lacks are defined here. Every call costs one syscall and no
Python-level allocation: the register block and the event-message word are preallocated.
"""

from __future__ import annotations

import ctypes
import os
import struct

from ptrace.binding.func import (
    PTRACE_CONT,
    PTRACE_GETEVENTMSG,
    PTRACE_GETREGS,
    PTRACE_GETSIGINFO,
    PTRACE_O_TRACECLONE,
    PTRACE_O_TRACEEXEC,
    PTRACE_O_TRACEFORK,
    PTRACE_O_TRACESYSGOOD,
    PTRACE_O_TRACEVFORK,
    PTRACE_SETREGS,
    PTRACE_SYSCALL,
)
from ptrace.binding.linux_struct import siginfo, user_regs_struct

PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_LISTEN = 0x4208

PTRACE_O_TRACESECCOMP = 0x80
PTRACE_O_EXITKILL = 0x100000

PTRACE_EVENT_FORK = 1
PTRACE_EVENT_VFORK = 2
PTRACE_EVENT_CLONE = 3
PTRACE_EVENT_EXEC = 4
PTRACE_EVENT_SECCOMP = 7
PTRACE_EVENT_STOP = 128

# EXITKILL: if the supervisor dies, trapped syscalls would fail with ENOSYS in an untraced
# tracee, so the kernel must kill the program instead (DESIGN.md).
TRACE_OPTIONS = (
    PTRACE_O_TRACESECCOMP
    | PTRACE_O_EXITKILL
    | PTRACE_O_TRACECLONE
    | PTRACE_O_TRACEFORK
    | PTRACE_O_TRACEVFORK
    | PTRACE_O_TRACEEXEC
    | PTRACE_O_TRACESYSGOOD
)

WALL = 0x40000000  # __WALL: wait for threads and processes alike

Registers = user_regs_struct

_libc = ctypes.CDLL(None, use_errno=True)
_ptrace = _libc.ptrace
_ptrace.restype = ctypes.c_long
_ptrace.argtypes = (ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)


class PtraceFailed(OSError):
    """A ptrace request failed; ESRCH means the task is gone (killed, or exited meanwhile)."""


def _fail(request: int, tid: int) -> PtraceFailed:
    err = ctypes.get_errno()
    return PtraceFailed(err, f"ptrace({request:#x}, {tid}): {os.strerror(err)}")


def seize(tid: int, options: int = TRACE_OPTIONS) -> None:
    if _ptrace(PTRACE_SEIZE, tid, None, options) == -1:
        raise _fail(PTRACE_SEIZE, tid)


def cont(tid: int, signal: int = 0) -> None:
    if _ptrace(PTRACE_CONT, tid, None, signal) == -1:
        raise _fail(PTRACE_CONT, tid)


def cont_to_exit(tid: int) -> None:
    """Resume and stop again at this syscall's exit (PTRACE_SYSCALL)."""
    if _ptrace(PTRACE_SYSCALL, tid, None, 0) == -1:
        raise _fail(PTRACE_SYSCALL, tid)


def listen(tid: int) -> None:
    """Leave a group-stopped task stopped, but let the tracer see it being continued."""
    if _ptrace(PTRACE_LISTEN, tid, None, 0) == -1:
        raise _fail(PTRACE_LISTEN, tid)


class RegisterBlock:
    """One preallocated user_regs_struct, reused for every stop of every task."""

    __slots__ = ("_address", "regs")

    def __init__(self) -> None:
        self.regs = Registers()
        self._address = ctypes.addressof(self.regs)

    def load(self, tid: int) -> Registers:
        if _ptrace(PTRACE_GETREGS, tid, None, self._address) == -1:
            raise _fail(PTRACE_GETREGS, tid)
        return self.regs

    def store(self, tid: int) -> None:
        if _ptrace(PTRACE_SETREGS, tid, None, self._address) == -1:
            raise _fail(PTRACE_SETREGS, tid)

    def snapshot(self) -> bytes:
        """The registers as last loaded, to put back with `restore` after an injection."""
        return ctypes.string_at(self._address, ctypes.sizeof(self.regs))

    def restore(self, saved: bytes) -> Registers:
        ctypes.memmove(self._address, saved, len(saved))
        return self.regs


class EventMessage:
    """PTRACE_GETEVENTMSG into one preallocated word (the seccomp tag, a new tid, ...)."""

    __slots__ = ("_address", "_word")

    def __init__(self) -> None:
        self._word = ctypes.c_ulong()
        self._address = ctypes.addressof(self._word)

    def read(self, tid: int) -> int:
        if _ptrace(PTRACE_GETEVENTMSG, tid, None, self._address) == -1:
            raise _fail(PTRACE_GETEVENTMSG, tid)
        return self._word.value


PTRACE_GET_SYSCALL_INFO = 0x420E
PTRACE_SYSCALL_INFO_SECCOMP = 3
# struct ptrace_syscall_info, seccomp variant: op, arch, ip, sp, nr, args[6], ret_data
_SYSCALL_INFO = struct.Struct("<B3xIQQQ6QI")


class SyscallInfo:
    """PTRACE_GET_SYSCALL_INFO at a seccomp stop: tag, number and arguments in one request.

    One ptrace request costs ~4 µs on these VMs, so this replaces GETEVENTMSG + GETREGS.
    """

    __slots__ = ("_address", "_buffer", "_size")

    def __init__(self) -> None:
        self._size = _SYSCALL_INFO.size
        self._buffer = ctypes.create_string_buffer(self._size)
        self._address = ctypes.addressof(self._buffer)

    def read(self, tid: int) -> tuple[int, ...]:
        """(op, arch, ip, sp, nr, a0..a5, tag)."""
        if _ptrace(PTRACE_GET_SYSCALL_INFO, tid, self._size, self._address) == -1:
            raise _fail(PTRACE_GET_SYSCALL_INFO, tid)
        return _SYSCALL_INFO.unpack_from(self._buffer)


def has_siginfo(tid: int) -> bool:
    """False for a group-stop, whose stop reports no siginfo (ptrace(2), "Group-stop")."""
    info = siginfo()
    return _ptrace(PTRACE_GETSIGINFO, tid, None, ctypes.addressof(info)) != -1
