"""inotify(7) through ctypes: the stdlib has no binding and only three calls are needed.

Remote files open for writing are local copies; inotify says when the program has opened,
modified and finally closed them (however it closed them: close, dup2 over, exec, exit), which
is when their data goes back to the target.
"""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Iterator

_libc = ctypes.CDLL(None, use_errno=True)
_libc.inotify_add_watch.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)

IN_MODIFY = 0x002
IN_CLOSE_WRITE = 0x008
IN_CLOSE_NOWRITE = 0x010
IN_OPEN = 0x020
IN_Q_OVERFLOW = 0x4000  # with wd -1: events were dropped
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of name)


def _check(result: int) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


class Inotify:
    def __init__(self) -> None:
        self.fd = _check(_libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC))

    def watch(self, path: str, mask: int) -> int:
        return _check(_libc.inotify_add_watch(self.fd, os.fsencode(path), mask))

    def unwatch(self, wd: int) -> None:
        _libc.inotify_rm_watch(self.fd, wd)  # fails only for a watch already gone

    def events(self) -> Iterator[tuple[int, int]]:
        """Every queued (wd, mask), without blocking."""
        while True:
            try:
                data = os.read(self.fd, 64 * 1024)
            except BlockingIOError:
                return
            offset = 0
            while offset < len(data):
                wd, mask, _, length = _EVENT.unpack_from(data, offset)
                offset += _EVENT.size + length
                yield wd, mask

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
