"""A classic-BPF interpreter for seccomp filters, written for the tests.

It accepts what the kernel accepts for seccomp (the checks of bpf_check_classic plus
seccomp_check_filter: the instruction whitelist, 32-bit aligned absolute loads inside
struct seccomp_data, forward jumps that stay inside the program, a final ret, no constant division
by zero, no constant shift of 32 or more, scratch memory stored before it is loaded) and runs a
program over a struct seccomp_data built from its fields, byte for byte as x86_64 lays it out.
Besides the verdict it reports which seccomp_data offsets were loaded and which instruction codes
ran, so tests can check what the kernel's constant-action cache would conclude.

It deliberately shares nothing with seccomp.bpf but the wire format of struct sock_filter.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

SOCK_FILTER = struct.Struct("=HBBI")
SECCOMP_DATA = struct.Struct("=IIQ6Q")  # nr, arch, instruction_pointer, args[6]
U32 = 0xFFFF_FFFF
MAX_INSTRUCTIONS = 4096
MEMORY_WORDS = 16

# Classes
LD, LDX, ST, STX, ALU, JMP, RET, MISC = range(8)
# Sizes / modes (LD, LDX)
W = 0x00
IMM, ABS, IND, MEM, LEN, MSH = 0x00, 0x20, 0x40, 0x60, 0x80, 0xA0
# ALU / JMP operations
ADD, SUB, MUL, DIV, OR, AND, LSH, RSH, NEG, MOD, XOR = (
    0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0,
)
JA, JEQ, JGT, JGE, JSET = 0x00, 0x10, 0x20, 0x30, 0x40
# Sources
K, X = 0x00, 0x08
# RET sources
RET_A = 0x10
# MISC operations
TAX, TXA = 0x00, 0x80

# seccomp_check_filter's whitelist (MOD is not on it).
_ALLOWED_CODES = frozenset(
    {LD | W | ABS, LD | W | LEN, LDX | W | LEN, RET | K, RET | RET_A}
    | {ALU | op | src for op in (ADD, SUB, MUL, DIV, AND, OR, XOR, LSH, RSH) for src in (K, X)}
    | {ALU | NEG, LD | IMM, LDX | IMM, MISC | TAX, MISC | TXA, LD | MEM, LDX | MEM, ST, STX}
    | {JMP | JA}
    | {JMP | op | src for op in (JEQ, JGE, JGT, JSET) for src in (K, X)}
)


class RejectedProgram(ValueError):
    """The kernel would refuse this program with EINVAL."""


@dataclass(frozen=True)
class SockFilter:
    code: int
    jt: int
    jf: int
    k: int


@dataclass(frozen=True)
class SeccompData:
    nr: int
    arch: int
    instruction_pointer: int = 0
    args: tuple[int, int, int, int, int, int] = (0, 0, 0, 0, 0, 0)

    def pack(self) -> bytes:
        return SECCOMP_DATA.pack(self.nr & U32, self.arch, self.instruction_pointer, *self.args)


@dataclass(frozen=True)
class Run:
    """The verdict of one run and what the run looked at."""

    verdict: int
    loaded_offsets: frozenset[int]
    executed_codes: frozenset[int]
    steps: int


def decode(program: bytes) -> list[SockFilter]:
    if len(program) % SOCK_FILTER.size:
        raise RejectedProgram(f"{len(program)} bytes is not a whole number of sock_filters")
    return [SockFilter(*fields) for fields in SOCK_FILTER.iter_unpack(program)]


def check(program: list[SockFilter]) -> None:
    """Raise RejectedProgram where the kernel's checks would fail."""
    length = len(program)
    if not 1 <= length <= MAX_INSTRUCTIONS:
        raise RejectedProgram(f"program length {length} is outside 1..{MAX_INSTRUCTIONS}")
    for pc, insn in enumerate(program):
        code, k = insn.code, insn.k
        if code not in _ALLOWED_CODES:
            raise RejectedProgram(f"instruction {pc}: code {code:#x} is not allowed in seccomp")
        if code == LD | W | ABS and (k >= SECCOMP_DATA.size or k & 3):
            raise RejectedProgram(f"instruction {pc}: load offset {k} is misaligned or outside")
        if code == ALU | DIV | K and k == 0:
            raise RejectedProgram(f"instruction {pc}: division by constant zero")
        if code in (ALU | LSH | K, ALU | RSH | K) and k >= 32:
            raise RejectedProgram(f"instruction {pc}: shift by {k}")
        if code in (LD | MEM, LDX | MEM, ST, STX) and k >= MEMORY_WORDS:
            raise RejectedProgram(f"instruction {pc}: scratch slot {k} does not exist")
        if code == JMP | JA:
            if k >= length - pc - 1:
                raise RejectedProgram(f"instruction {pc}: ja leaves the program")
        elif code & 0x07 == JMP and (pc + insn.jt + 1 >= length or pc + insn.jf + 1 >= length):
            raise RejectedProgram(f"instruction {pc}: conditional jump leaves the program")
    if program[-1].code & 0x07 != RET:
        raise RejectedProgram("the last instruction is not a ret")
    _check_memory_initialised(program)


def _check_memory_initialised(program: list[SockFilter]) -> None:
    """Every load of a scratch slot must follow a store to it on every path (forward dataflow)."""
    all_slots = (1 << MEMORY_WORDS) - 1
    stored_at = [all_slots] * len(program)  # slots certainly stored on entry (meet over paths)
    stored_at[0] = 0
    for pc, insn in enumerate(program):
        stored = stored_at[pc]
        if insn.code in (LD | MEM, LDX | MEM) and not stored & (1 << insn.k):
            raise RejectedProgram(f"instruction {pc}: scratch slot {insn.k} may be unset")
        if insn.code in (ST, STX):
            stored |= 1 << insn.k
        if insn.code & 0x07 == RET:
            continue
        if insn.code == JMP | JA:
            successors = [pc + 1 + insn.k]
        elif insn.code & 0x07 == JMP:
            successors = [pc + 1 + insn.jt, pc + 1 + insn.jf]
        else:
            successors = [pc + 1]
        for successor in successors:
            stored_at[successor] &= stored


def run(program: bytes | list[SockFilter], data: SeccompData) -> Run:
    """Check and run `program` over `data`."""
    instructions = decode(program) if isinstance(program, bytes) else program
    check(instructions)
    packet = data.pack()
    a = x = 0
    memory = [0] * MEMORY_WORDS
    loaded: set[int] = set()
    executed: set[int] = set()
    pc = steps = 0
    while True:
        insn = instructions[pc]
        steps += 1
        code, k = insn.code, insn.k
        executed.add(code)
        pc += 1
        cls = code & 0x07
        if cls == RET:
            verdict = k if code == RET | K else a
            return Run(verdict, frozenset(loaded), frozenset(executed), steps)
        if code == LD | W | ABS:
            loaded.add(k)
            a = struct.unpack_from("=I", packet, k)[0]
        elif code == LD | W | LEN:
            a = SECCOMP_DATA.size
        elif code == LDX | W | LEN:
            x = SECCOMP_DATA.size
        elif code == LD | IMM:
            a = k
        elif code == LDX | IMM:
            x = k
        elif code == LD | MEM:
            a = memory[k]
        elif code == LDX | MEM:
            x = memory[k]
        elif code == ST:
            memory[k] = a
        elif code == STX:
            memory[k] = x
        elif code == MISC | TAX:
            x = a
        elif code == MISC | TXA:
            a = x
        elif cls == ALU:
            operand = x if code & X else k
            if code & 0xF0 == DIV and operand == 0:
                return Run(0, frozenset(loaded), frozenset(executed), steps)  # the filter returns 0
            a = _alu(code & 0xF0, a, operand)
        elif code == JMP | JA:
            pc += k
        else:
            operand = x if code & X else k
            pc += insn.jt if _condition(code & 0xF0, a, operand) else insn.jf


_ALU_OPERATIONS: dict[int, Callable[[int, int], int]] = {
    ADD: lambda a, b: a + b,
    SUB: lambda a, b: a - b,
    MUL: lambda a, b: a * b,
    DIV: lambda a, b: a // b,
    OR: lambda a, b: a | b,
    AND: lambda a, b: a & b,
    # The kernel's 32-bit shifts by a register use its low 5 bits.
    LSH: lambda a, b: a << (b & 31),
    RSH: lambda a, b: a >> (b & 31),
    NEG: lambda a, _: -a,
    XOR: lambda a, b: a ^ b,
}

_JUMP_CONDITIONS: dict[int, Callable[[int, int], bool]] = {
    JEQ: lambda a, b: a == b,
    JGT: lambda a, b: a > b,
    JGE: lambda a, b: a >= b,
    JSET: lambda a, b: a & b != 0,
}


def _alu(operation: int, a: int, operand: int) -> int:
    return _ALU_OPERATIONS[operation](a, operand) & U32


def _condition(operation: int, a: int, operand: int) -> bool:
    return _JUMP_CONDITIONS[operation](a, operand)
