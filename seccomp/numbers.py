"""x86_64 syscall numbers by name, from python-ptrace's table."""

from __future__ import annotations

from functools import cache

from ptrace.syscall.linux.x86_64 import SYSCALL_NAMES

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
