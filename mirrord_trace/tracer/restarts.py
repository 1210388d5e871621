"""Calls a signal interrupted while they waited for the supervisor's notification answer.

A notified call sleeps in the kernel until the notification thread receives it; a signal that
arrives before that withdraws the notification and the call returns -ERESTARTSYS. With a
handler installed without SA_RESTART the program would then see EINTR from a stat or an open of
a regular file, which never happens natively (a ptrace stop is not interruptible this way). The
tracer sees the signal-delivery stop before the kernel picks between EINTR and restarting, and
asks here whether the call could have been interrupted natively: only an open of a FIFO or a
device can block. Any other interrupted call is restarted as if the handler had SA_RESTART.
"""

from __future__ import annotations

import os
import stat

from mirrord_trace.tracer.memory import TraceeMemory, TraceeMemoryError

_AT_FDCWD = -100
_O_NONBLOCK = os.O_NONBLOCK
# nr -> (index of the dirfd argument or None, index of the path argument, index of the flags)
_OPENS: dict[int, tuple[int | None, int, int | None]] = {
    2: (None, 0, 1),  # open(path, flags, mode)
    85: (None, 0, None),  # creat(path, mode): O_CREAT|O_WRONLY|O_TRUNC, blocks like an open
    257: (0, 1, 2),  # openat(dirfd, path, flags, mode)
    437: (0, 1, None),  # openat2(dirfd, path, how, size): flags are in `how`
}


def could_block_natively(tid: int, nr: int, args: tuple[int, ...], memory: TraceeMemory) -> bool:
    """Whether the interrupted call might have slept interruptibly without mirrord-trace."""
    shape = _OPENS.get(nr)
    if shape is None:
        return False  # stat, access, readlink, chdir: no interruptible sleep on a local path
    dirfd_index, path_index, flags_index = shape
    try:
        if flags_index is not None:
            flags = args[flags_index]
        elif nr == 437:
            flags = int.from_bytes(memory.read(args[2], 8), "little")
        else:
            flags = 0
        if flags & _O_NONBLOCK:
            return False
        path = os.fsdecode(memory.read_cstring(args[path_index]))
    except TraceeMemoryError:
        return False  # the kernel answers EFAULT on the restart
    if not path.startswith("/"):
        dirfd = _AT_FDCWD if dirfd_index is None else _signed32(args[dirfd_index])
        base = f"/proc/{tid}/cwd" if dirfd == _AT_FDCWD else f"/proc/{tid}/fd/{dirfd}"
        path = f"{base}/{path}"
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False  # a missing file fails at once
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode)


def _signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value
