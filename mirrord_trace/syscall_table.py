"""The syscalls mirrord-trace traps, their argument shapes, and how --trace prints them.

Syscall numbers come from python-ptrace's x86_64 table; the shapes say which argument is a path,
a directory fd, open flags, and so on, so decoding for --trace needs no per-syscall code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from mirrord_trace.handlers.call import SyscallCall
from seccomp.numbers import SYSCALL_NAMES

# python-ptrace's table also lists the x32 variants (512 and up) under the same names; the
# native number is the one the filter must trap (x32 calls are refused in the filter anyway).
_X32_FIRST = 512
SYSCALL_NUMBERS: dict[str, int] = {
    name: nr for nr, name in SYSCALL_NAMES.items() if nr < _X32_FIRST
}
AT_FDCWD = -100


@dataclass(frozen=True, slots=True)
class SyscallShape:
    name: str
    args: tuple[str, ...]  # kinds: dirfd, fd, path, oflags, mode, atflags, int, ptr

    @property
    def nr(self) -> int:
        return SYSCALL_NUMBERS[self.name]

    def arg_index(self, kind: str) -> int | None:
        try:
            return self.args.index(kind)
        except ValueError:
            return None


def _shapes(*shapes: SyscallShape) -> dict[str, SyscallShape]:
    return {shape.name: shape for shape in shapes}


# Syscalls that name a path: the filesystem layer decides local / remote / not found for them.
FS_PATH_SYSCALLS = _shapes(
    SyscallShape("open", ("path", "oflags", "mode")),
    SyscallShape("openat", ("dirfd", "path", "oflags", "mode")),
    SyscallShape("openat2", ("dirfd", "path", "ptr", "int")),
    SyscallShape("creat", ("path", "mode")),
    SyscallShape("stat", ("path", "ptr")),
    SyscallShape("lstat", ("path", "ptr")),
    SyscallShape("newfstatat", ("dirfd", "path", "ptr", "atflags")),
    SyscallShape("statx", ("dirfd", "path", "atflags", "int", "ptr")),
    SyscallShape("access", ("path", "mode")),
    SyscallShape("faccessat", ("dirfd", "path", "mode")),
    SyscallShape("faccessat2", ("dirfd", "path", "mode", "atflags")),
    SyscallShape("readlink", ("path", "ptr", "int")),
    SyscallShape("readlinkat", ("dirfd", "path", "ptr", "int")),
    SyscallShape("chdir", ("path",)),
)

# Refused outright in the filter (no stop): io_uring would let the program bypass the filter.
REFUSED_WITH_ENOSYS = ("io_uring_setup",)

TRAPPED_SYSCALL_NAMES: tuple[str, ...] = tuple(FS_PATH_SYSCALLS)

_OPEN_FLAGS = [
    (os.O_WRONLY, "O_WRONLY"),
    (os.O_RDWR, "O_RDWR"),
    (os.O_CREAT, "O_CREAT"),
    (os.O_EXCL, "O_EXCL"),
    (os.O_NOCTTY, "O_NOCTTY"),
    (os.O_TRUNC, "O_TRUNC"),
    (os.O_APPEND, "O_APPEND"),
    (os.O_NONBLOCK, "O_NONBLOCK"),
    (os.O_DIRECTORY, "O_DIRECTORY"),
    (os.O_NOFOLLOW, "O_NOFOLLOW"),
    (os.O_CLOEXEC, "O_CLOEXEC"),
    (os.O_PATH, "O_PATH"),
    (0o200000 | 0o20000000, "O_TMPFILE"),
]
_AT_FLAGS = [(0x100, "AT_SYMLINK_NOFOLLOW"), (0x200, "AT_EACCESS"), (0x800, "AT_NO_AUTOMOUNT"),
             (0x1000, "AT_EMPTY_PATH")]


def _flag_names(value: int, table: list[tuple[int, str]], base: str) -> str:
    names = [name for bit, name in table if bit and value & bit == bit]
    rest = value
    for bit, _ in table:
        if value & bit == bit:
            rest &= ~bit
    if rest:
        names.append(hex(rest))
    return "|".join([base, *names] if base else names) or "0"


def _format_arg(kind: str, call: SyscallCall, index: int) -> str:
    raw = call.args[index]
    if kind == "path":
        return repr(call.string_arg(index).decode("utf-8", "backslashreplace")).replace("'", '"')
    if kind in ("dirfd", "fd", "int"):
        value = call.int_arg(index)
        return "AT_FDCWD" if kind == "dirfd" and value == AT_FDCWD else str(value)
    if kind == "oflags":
        return _flag_names(raw & ~0o3, _OPEN_FLAGS[2:], "O_RDONLY") if raw & 0o3 == 0 else \
            _flag_names(raw, _OPEN_FLAGS, "")
    if kind == "atflags":
        return _flag_names(raw & 0xFFFFFFFF, _AT_FLAGS, "")
    if kind == "mode":
        return oct(raw & 0o7777)
    return hex(raw)


def describe(shape: SyscallShape, call: SyscallCall) -> str:
    """`openat(AT_FDCWD, "/etc/hosts", O_RDONLY|O_CLOEXEC)` for --trace."""
    args = ", ".join(_format_arg(kind, call, i) for i, kind in enumerate(shape.args))
    return f"{shape.name}({args})"
