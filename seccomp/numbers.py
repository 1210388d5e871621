"""x86_64 syscall numbers by name, from python-ptrace's table."""

from __future__ import annotations

import importlib.util
import os
from functools import cache


def _load_python_ptrace_table() -> dict[int, str]:
    """python-ptrace's x86_64 table, loaded from its file on its own.

    Importing it as `ptrace.syscall.linux.x86_64` runs the `ptrace.syscall` package first,
    which imports python-ptrace's whole syscall formatter (~15 ms of every start-up) for a
    plain dict. Even `import ptrace` runs its `ptrace.error`, which imports logging and
    traceback; finding the package's directory does not.
    """
    package = importlib.util.find_spec("ptrace")
    if package is None or not package.submodule_search_locations:
        raise ModuleNotFoundError("No module named 'ptrace'", name="ptrace")
    directory = next(iter(package.submodule_search_locations))
    path = os.path.join(directory, "syscall", "linux", "x86_64.py")
    spec = importlib.util.spec_from_file_location("_python_ptrace_x86_64_syscalls", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.SYSCALL_NAMES)


SYSCALL_NAMES: dict[int, str] = _load_python_ptrace_table()

# python-ptrace's table also lists the x32 entry points (512..547) under the same names as their
# native counterparts; the native number is always the lower one, so the first one seen wins.
_NUMBERS_BY_NAME: dict[str, int] = {}
for _number, _name in sorted(SYSCALL_NAMES.items()):
    _NUMBERS_BY_NAME.setdefault(_name, _number)


class UnknownSyscallError(ValueError):
    """A syscall name that x86_64 does not have."""


@cache
def syscall_number(name: str) -> int:
    """The native x86_64 number of the syscall called `name` (e.g. "openat" -> 257)."""
    try:
        return _NUMBERS_BY_NAME[name]
    except KeyError:
        raise UnknownSyscallError(
            f"unknown x86_64 syscall {name!r}: use a name from the Linux syscall table, "
            "such as 'openat' or 'connect'"
        ) from None


def syscall_name(number: int) -> str:
    """The name of x86_64 syscall `number`, or "syscall_<number>" when it has none."""
    return SYSCALL_NAMES.get(number, f"syscall_{number}")
