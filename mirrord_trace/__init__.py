"""mirrord-trace: run local programs in the context of a remote pod, at the syscall boundary."""

import ctypes as _ctypes
import sys as _sys
import types as _types

__version__ = "0.1.0"

# python-ptrace finds libc at import time with ctypes.util.find_library, which spawns
# `ldconfig -p`: ~10 ms of start-up and a stray child of the supervisor. The C library is
# already loaded in this process, so hand python-ptrace that one.
if "ptrace.ctypes_libc" not in _sys.modules:
    _libc_module = _types.ModuleType("ptrace.ctypes_libc")
    _libc_module.LIBC_FILENAME = "libc.so.6"  # type: ignore[attr-defined]
    _libc_module.libc = _ctypes.CDLL("libc.so.6", use_errno=True)  # type: ignore[attr-defined]
    _sys.modules["ptrace.ctypes_libc"] = _libc_module
