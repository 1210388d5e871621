"""Install a seccomp filter on the calling thread: prctl(PR_SET_NO_NEW_PRIVS) + seccomp(2).

The supervisor installs the filter in a child it has just forked, right before exec. After fork
only the forking thread exists in the child, and any lock another thread of the parent held at
fork time (malloc's, the dynamic loader's, the import lock) stays locked forever. So everything
that might allocate or take such a lock happens in `prepare_filter`, before the fork: copying the
program into a C buffer, building `struct sock_fprog`, resolving `prctl` and `syscall` with dlsym,
and creating every ctypes argument object. `PreparedFilter.install` then only makes the two
foreign calls, with no imports and no allocation beyond what a ctypes call itself does.

PR_SET_NO_NEW_PRIVS is required for an unprivileged caller and harmless for root; it also means
that set-user-ID programs run by the tracee do not gain privileges (ptrace already prevents that).
"""

from __future__ import annotations

import ctypes
import os

from seccomp.bpf import BPF_MAXINSNS, SOCK_FILTER, Program

PR_SET_NO_NEW_PRIVS = 38
SYS_SECCOMP = 317  # x86_64
SECCOMP_SET_MODE_FILTER = 1

# Flags for SECCOMP_SET_MODE_FILTER (<linux/seccomp.h>).
SECCOMP_FILTER_FLAG_TSYNC = 1 << 0
SECCOMP_FILTER_FLAG_LOG = 1 << 1
SECCOMP_FILTER_FLAG_SPEC_ALLOW = 1 << 2
# Returns a listener fd (close-on-exec) for the filter's Notify() rules.
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
# Once the supervisor has received a notification, only a fatal signal interrupts the wait, so a
# program's signal handler cannot turn a call the supervisor is deciding into EINTR (Linux 5.19).
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV = 1 << 5

_LIBC = ctypes.CDLL(None, use_errno=True)


class _SockFprog(ctypes.Structure):
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class PreparedFilter:
    """A filter ready to install with two syscalls and nothing else (safe right after fork)."""

    __slots__ = (
        "_buffer",
        "_flags",
        "_fprog",
        "_fprog_pointer",
        "_no_new_privs",
        "_one",
        "_prctl",
        "_seccomp_nr",
        "_set_mode_filter",
        "_syscall",
        "_zero",
    )

    def __init__(self, program_bytes: bytes, flags: int) -> None:
        count, remainder = divmod(len(program_bytes), SOCK_FILTER.size)
        if remainder or not 1 <= count <= BPF_MAXINSNS:
            raise ValueError(
                f"a seccomp program is 1..{BPF_MAXINSNS} instructions of {SOCK_FILTER.size} "
                f"bytes; got {len(program_bytes)} bytes: build it with seccomp.build_filter"
            )
        self._buffer = ctypes.create_string_buffer(program_bytes, len(program_bytes))
        self._fprog = _SockFprog(count, ctypes.addressof(self._buffer))
        self._fprog_pointer = ctypes.pointer(self._fprog)
        # Indexing (not attribute access) gives private function objects, so setting argtypes
        # here cannot clash with other modules' use of the same libc functions.
        self._prctl = _LIBC["prctl"]
        self._prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
        self._prctl.restype = ctypes.c_int
        self._syscall = _LIBC["syscall"]
        self._syscall.argtypes = [ctypes.c_long, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_void_p]
        self._syscall.restype = ctypes.c_long
        self._no_new_privs = ctypes.c_int(PR_SET_NO_NEW_PRIVS)
        self._one = ctypes.c_ulong(1)
        self._zero = ctypes.c_ulong(0)
        self._seccomp_nr = ctypes.c_long(SYS_SECCOMP)
        self._set_mode_filter = ctypes.c_ulong(SECCOMP_SET_MODE_FILTER)
        self._flags = ctypes.c_ulong(flags)
        # ctypes keeps errno in a per-thread object created on first use; create it now, for
        # the usual case where the thread that prepares is the one that forks.
        ctypes.set_errno(0)

    @property
    def flags(self) -> int:
        return self._flags.value

    def install(self) -> int:
        """Set no_new_privs and install the filter on the calling thread; OSError on failure.

        Returns the listener fd when the flags asked for one (NEW_LISTENER), else 0."""
        zero = self._zero
        if self._prctl(self._no_new_privs, self._one, zero, zero, zero) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(error)}")
        result = self._syscall(
            self._seccomp_nr, self._set_mode_filter, self._flags, self._fprog_pointer
        )
        if result < 0:
            error = ctypes.get_errno()
            raise OSError(error, f"seccomp(SECCOMP_SET_MODE_FILTER): {os.strerror(error)}")
        return result


def prepare_filter(program: Program | bytes, *, flags: int = 0) -> PreparedFilter:
    """Do all allocation for installing `program` now, so `.install()` can run after fork."""
    program_bytes = program.to_bytes() if isinstance(program, Program) else bytes(program)
    return PreparedFilter(program_bytes, flags)


def install_filter(program: Program | bytes, *, flags: int = 0) -> int:
    """Install `program` as a seccomp filter on the calling thread (and its future children);
    returns the listener fd if `flags` asked for one, else 0."""
    return prepare_filter(program, flags=flags).install()
