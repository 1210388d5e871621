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

from mirrord_trace.handlers.call import SyscallCall
from mirrord_trace.syscall_table import AT_FDCWD, FS_PATH_SYSCALLS
from mirrord_trace.tracer.memory import TraceeMemoryError

# The opens, by number: only they can sleep interruptibly (on a FIFO or a device).
_OPENS = {
    shape.nr: shape
    for shape in FS_PATH_SYSCALLS.values()
    if shape.name in ("open", "openat", "openat2", "creat")
}


def could_block_natively(call: SyscallCall) -> bool:
    """Whether the interrupted call might have slept interruptibly without mirrord-trace."""
    shape = _OPENS.get(call.nr)
    if shape is None:
        return False  # stat, access, readlink, chdir: no interruptible sleep on a local path
    dirfd_index, flags_index = shape.arg_index("dirfd"), shape.arg_index("oflags")
    path_index = shape.arg_index("path")
    assert path_index is not None
    try:
        if flags_index is not None:
            flags = call.args[flags_index]
        elif shape.name == "openat2":  # the flags are the first field of `struct open_how`
            flags = int.from_bytes(call.memory.read(call.args[2], 8), "little")
        else:
            flags = 0  # creat: O_CREAT|O_WRONLY|O_TRUNC, blocks like an open
        if flags & os.O_NONBLOCK:
            return False
        path = os.fsdecode(call.string_arg(path_index))
    except TraceeMemoryError:
        return False  # the kernel answers EFAULT on the restart
    if not path.startswith("/"):
        dirfd = AT_FDCWD if dirfd_index is None else call.int_arg(dirfd_index)
        base = f"/proc/{call.tid}/cwd" if dirfd == AT_FDCWD else f"/proc/{call.tid}/fd/{dirfd}"
        path = f"{base}/{path}"
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False  # a missing file fails at once
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
