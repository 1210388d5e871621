"""A small classic-BPF assembler for seccomp filters.

A program is written as a list of items: instructions (`load_word`, `ret`, conditional jumps,
`goto`) and `Label`s. Jumps name their targets by label; a conditional jump's missing target means
"the next instruction". `assemble` resolves the labels into `struct sock_filter` offsets.

Classic BPF jumps only forward, and a conditional jump's offsets (jt, jf) are 8 bits wide, while
`ja` has a 32-bit offset. When a conditional target is farther than 255 instructions, the
assembler places an `ja` trampoline right after the jump and points the short offset at it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

# Instruction classes, sizes, modes and operations from <linux/bpf_common.h>.
BPF_LD = 0x00
BPF_ALU = 0x04
BPF_JMP = 0x05
BPF_RET = 0x06
BPF_W = 0x00
BPF_ABS = 0x20
BPF_K = 0x00
BPF_JA = 0x00
BPF_JEQ = 0x10
BPF_JGT = 0x20
BPF_JGE = 0x30
BPF_JSET = 0x40

LD_ABS_WORD = BPF_LD | BPF_W | BPF_ABS
RET_K = BPF_RET | BPF_K
JA = BPF_JMP | BPF_JA
JEQ_K = BPF_JMP | BPF_JEQ | BPF_K
JGT_K = BPF_JMP | BPF_JGT | BPF_K
JGE_K = BPF_JMP | BPF_JGE | BPF_K
JSET_K = BPF_JMP | BPF_JSET | BPF_K

BPF_MAXINSNS = 4096
MAX_SHORT_JUMP = 0xFF
U32_MAX = 0xFFFF_FFFF

# struct sock_filter { __u16 code; __u8 jt; __u8 jf; __u32 k; } in native byte order.
SOCK_FILTER = struct.Struct("=HBBI")


class AssemblyError(ValueError):
    """The item list cannot become a valid classic-BPF program."""


class ProgramTooLongError(AssemblyError):
    """The program exceeds the kernel's BPF_MAXINSNS."""


@dataclass(frozen=True)
class Instruction:
    """One resolved `struct sock_filter`."""

    code: int
    jt: int
    jf: int
    k: int

    def pack(self) -> bytes:
        return SOCK_FILTER.pack(self.code, self.jt, self.jf, self.k)


@dataclass(frozen=True)
class Program:
    """An assembled program: the instructions, and their bytes for `struct sock_fprog`."""

    instructions: tuple[Instruction, ...]

    def to_bytes(self) -> bytes:
        return b"".join(instruction.pack() for instruction in self.instructions)

    def __len__(self) -> int:
        return len(self.instructions)


@dataclass(frozen=True)
class Label:
    """Names the position of the instruction that follows it."""

    name: str


@dataclass(frozen=True)
class Statement:
    """An instruction that does not jump (load, return)."""

    code: int
    k: int


@dataclass(frozen=True)
class Jump:
    """A conditional jump comparing the accumulator with `k`; None targets the next instruction."""

    code: int
    k: int
    if_true: str | None = None
    if_false: str | None = None


@dataclass(frozen=True)
class Goto:
    """An unconditional `ja` to a label."""

    target: str


Item = Label | Statement | Jump | Goto


def _check_u32(value: int, what: str) -> int:
    if not 0 <= value <= U32_MAX:
        raise AssemblyError(f"{what} {value:#x} does not fit in 32 bits: use 0..{U32_MAX:#x}")
    return value


def load_word(offset: int) -> Statement:
    """A <- the 32-bit word at `offset` of the input (struct seccomp_data)."""
    return Statement(LD_ABS_WORD, _check_u32(offset, "load offset"))


def ret(value: int) -> Statement:
    """Return `value` (a SECCOMP_RET_* action with its data)."""
    return Statement(RET_K, _check_u32(value, "return value"))


def jump_if_equal(k: int, if_true: str | None = None, if_false: str | None = None) -> Jump:
    return Jump(JEQ_K, _check_u32(k, "jeq operand"), if_true, if_false)


def jump_if_greater(k: int, if_true: str | None = None, if_false: str | None = None) -> Jump:
    """Unsigned A > k."""
    return Jump(JGT_K, _check_u32(k, "jgt operand"), if_true, if_false)


def jump_if_greater_or_equal(
    k: int, if_true: str | None = None, if_false: str | None = None
) -> Jump:
    """Unsigned A >= k."""
    return Jump(JGE_K, _check_u32(k, "jge operand"), if_true, if_false)


def jump_if_any_bit(k: int, if_true: str | None = None, if_false: str | None = None) -> Jump:
    """A & k != 0."""
    return Jump(JSET_K, _check_u32(k, "jset operand"), if_true, if_false)


def goto(target: str) -> Goto:
    return Goto(target)


def assemble(items: Iterable[Item]) -> Program:
    """Resolve labels (adding `ja` trampolines for far conditional jumps) into a Program."""
    code, label_index = _split_labels(items)
    targets = [_target_indexes(index, item, label_index) for index, item in enumerate(code)]
    far_true, far_false = _choose_trampolines(code, targets)
    return Program(tuple(_emit(code, targets, far_true, far_false)))


def _split_labels(items: Iterable[Item]) -> tuple[list[Statement | Jump | Goto], dict[str, int]]:
    code: list[Statement | Jump | Goto] = []
    label_index: dict[str, int] = {}
    for item in items:
        if isinstance(item, Label):
            if item.name in label_index:
                raise AssemblyError(f"label {item.name!r} is defined twice")
            label_index[item.name] = len(code)
        else:
            code.append(item)
    if not code:
        raise AssemblyError("the program is empty: it needs at least a ret instruction")
    if not (isinstance(code[-1], Statement) and code[-1].code == RET_K):
        raise AssemblyError("the program must end with a ret instruction")
    dangling = [name for name, index in label_index.items() if index == len(code)]
    if dangling:
        raise AssemblyError(f"label {dangling[0]!r} is at the end, with no instruction after it")
    return code, label_index


def _target_indexes(
    index: int, item: Statement | Jump | Goto, label_index: dict[str, int]
) -> tuple[int, int]:
    """Source indexes of the (true, false) targets; a Goto uses the first, a Statement none."""
    if isinstance(item, Statement):
        return (-1, -1)
    names = (item.target, item.target) if isinstance(item, Goto) else (item.if_true, item.if_false)
    resolved = []
    for name in names:
        if name is None:
            resolved.append(index + 1)
            continue
        if name not in label_index:
            raise AssemblyError(f"jump to undefined label {name!r}")
        if label_index[name] <= index:
            raise AssemblyError(f"jump to {name!r} goes backwards: classic BPF jumps only forward")
        resolved.append(label_index[name])
    return (resolved[0], resolved[1])


def _choose_trampolines(
    code: list[Statement | Jump | Goto], targets: list[tuple[int, int]]
) -> tuple[set[int], set[int]]:
    """Which conditional jumps need a trampoline for their true / false side.

    Adding a trampoline moves later code, which can push other jumps out of range, so repeat
    until nothing changes. The sets only grow, so this ends.
    """
    far_true: set[int] = set()
    far_false: set[int] = set()
    while True:
        address = _addresses(code, far_true, far_false)
        changed = False
        for index, item in enumerate(code):
            if not isinstance(item, Jump):
                continue
            jt, jf = _short_offsets(index, address, targets[index], far_true, far_false)
            if jt > MAX_SHORT_JUMP and index not in far_true:
                far_true.add(index)
                changed = True
            if jf > MAX_SHORT_JUMP and index not in far_false:
                far_false.add(index)
                changed = True
        if not changed:
            length = address[-1]
            if length > BPF_MAXINSNS:
                raise ProgramTooLongError(
                    f"the BPF program has {length} instructions, more than the kernel's limit of "
                    f"{BPF_MAXINSNS}: list fewer syscalls or conditions"
                )
            return far_true, far_false


def _addresses(
    code: list[Statement | Jump | Goto], far_true: set[int], far_false: set[int]
) -> list[int]:
    """Final address of each source instruction, plus the program length as the last entry."""
    address = [0]
    for index in range(len(code)):
        size = 1 + (index in far_true) + (index in far_false)
        address.append(address[-1] + size)
    return address


def _short_offsets(
    index: int,
    address: list[int],
    target: tuple[int, int],
    far_true: set[int],
    far_false: set[int],
) -> tuple[int, int]:
    """(jt, jf) of the jump at `index`; trampolines sit right after it, true side first."""
    base = address[index] + 1
    jt = 0 if index in far_true else address[target[0]] - base
    # The false side's trampoline comes after the true side's, if there is one.
    jf = int(index in far_true) if index in far_false else address[target[1]] - base
    return jt, jf


def _emit(
    code: list[Statement | Jump | Goto],
    targets: list[tuple[int, int]],
    far_true: set[int],
    far_false: set[int],
) -> list[Instruction]:
    address = _addresses(code, far_true, far_false)
    out: list[Instruction] = []
    for index, item in enumerate(code):
        if isinstance(item, Statement):
            out.append(Instruction(item.code, 0, 0, item.k))
        elif isinstance(item, Goto):
            out.append(Instruction(JA, 0, 0, address[targets[index][0]] - (address[index] + 1)))
        else:
            jt, jf = _short_offsets(index, address, targets[index], far_true, far_false)
            out.append(Instruction(item.code, jt, jf, item.k))
            for side, far in ((0, far_true), (1, far_false)):
                if index in far:
                    here = len(out)
                    out.append(Instruction(JA, 0, 0, address[targets[index][side]] - (here + 1)))
    return out
