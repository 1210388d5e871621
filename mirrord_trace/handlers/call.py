"""The decoded view of one trapped syscall that handlers decide on.

A handler reads arguments and tracee memory through this object and returns an Action; it never
touches ptrace. Tests build SyscallCall objects over plain byte buffers.
"""

from __future__ import annotations

from typing import Protocol


class MemoryReader(Protocol):
    def read(self, address: int, size: int) -> bytes: ...

    def read_cstring(self, address: int, limit: int = ...) -> bytes: ...


class SyscallCall:
    __slots__ = ("args", "memory", "nr", "tgid", "tid")

    def __init__(
        self, tid: int, tgid: int, nr: int, args: tuple[int, ...], memory: MemoryReader
    ) -> None:
        self.tid = tid
        self.tgid = tgid
        self.nr = nr
        self.args = args
        self.memory = memory

    def int_arg(self, index: int) -> int:
        """An `int` argument: the kernel looks only at the low 32 bits, signed."""
        value = self.args[index] & 0xFFFFFFFF
        return value - (1 << 32) if value & 0x80000000 else value

    def string_arg(self, index: int) -> bytes:
        return self.memory.read_cstring(self.args[index])
