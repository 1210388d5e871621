"""Declarative seccomp rules -> a classic-BPF program for x86_64.

Program layout, chosen for the kernel's constant-action cache (Linux >= 5.11). At filter
installation the kernel runs an emulator over the program for every syscall number with only `nr`
and `arch` known; if the path reaches `ret SECCOMP_RET_ALLOW` using nothing but loads of those two
fields, `jeq/jgt/jge/jset k` and `ja`, the syscall is marked always-allowed and the filter never
runs for it again. Any load of `args[]` or `instruction_pointer` on the path makes it uncacheable.
So the program is:

    ld arch; jeq AUDIT_ARCH_X86_64 else KILL_PROCESS
    ld nr;   jge X32_SYSCALL_BIT -> ERRNO(ENOSYS)
    binary search over the listed syscall numbers (jge splits, jeq leaves) -> action or ALLOW
    per syscall with argument conditions: ld args[i] (low 32 bits), compare -> action ... fallback
    shared ret instructions

Every syscall that is not listed, or whose rules can only ever allow, reaches `ret ALLOW` through
`nr` comparisons alone and is therefore cached; arguments are loaded only on the paths of syscalls
whose verdict depends on them.

x32 (nr with bit 30 set, still under AUDIT_ARCH_X86_64) gets ERRNO(ENOSYS), not a kill: that is
exactly what a kernel built without CONFIG_X86_X32_ABI answers, so a program probing for x32
behaves as on such a kernel, and the call never runs, so nothing slips past the number checks
below (x32 `openat` has a different number from native `openat`). Foreign architectures (i386
via `int 0x80`) are killed: their numbers mean different syscalls and cannot be told apart
safely, and no program we trace is expected to use them.
"""

from __future__ import annotations

import errno as errno_codes
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from seccomp.bpf import (
    Item,
    Label,
    Program,
    assemble,
    jump_if_equal,
    jump_if_greater,
    jump_if_greater_or_equal,
    load_word,
    ret,
)

SECCOMP_RET_KILL_PROCESS = 0x8000_0000
SECCOMP_RET_ERRNO = 0x0005_0000
SECCOMP_RET_TRACE = 0x7FF0_0000
SECCOMP_RET_USER_NOTIF = 0x7FC0_0000
SECCOMP_RET_ALLOW = 0x7FFF_0000
SECCOMP_RET_DATA = 0x0000_FFFF

AUDIT_ARCH_X86_64 = 0xC000_003E
X32_SYSCALL_BIT = 0x4000_0000
MAX_ERRNO = 4095

# struct seccomp_data { int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]; }
SECCOMP_DATA_NR = 0
SECCOMP_DATA_ARCH = 4
SECCOMP_DATA_INSTRUCTION_POINTER = 8
SECCOMP_DATA_ARGS = 16
ARG_COUNT = 6

# Leaves of the binary search compare this many numbers one by one: deeper splitting would cost
# as many instructions on the path as it saves.
LEAF_SIZE = 4

ComparisonOp = Literal["==", "!=", ">=", ">", "<", "<="]
COMPARISON_OPS: tuple[ComparisonOp, ...] = ("==", "!=", ">=", ">", "<", "<=")


class FilterSpecError(ValueError):
    """A rule, action or condition that cannot be expressed in the filter."""


@dataclass(frozen=True)
class Allow:
    """Let the syscall run (SECCOMP_RET_ALLOW)."""

    @property
    def return_value(self) -> int:
        return SECCOMP_RET_ALLOW


@dataclass(frozen=True)
class Kill:
    """Kill the whole process as if by SIGSYS (SECCOMP_RET_KILL_PROCESS)."""

    @property
    def return_value(self) -> int:
        return SECCOMP_RET_KILL_PROCESS


@dataclass(frozen=True)
class Trace:
    """Stop for the ptrace tracer (SECCOMP_RET_TRACE); it reads `tag` via PTRACE_GETEVENTMSG.

    Without a tracer the kernel fails the syscall with ENOSYS.
    """

    tag: int

    def __post_init__(self) -> None:
        if not 0 <= self.tag <= SECCOMP_RET_DATA:
            raise FilterSpecError(f"trace tag {self.tag} is out of range: use 0..65535")

    @property
    def return_value(self) -> int:
        return SECCOMP_RET_TRACE | self.tag


@dataclass(frozen=True)
class Errno:
    """Fail the syscall with `errno` without running it (SECCOMP_RET_ERRNO)."""

    errno: int

    def __post_init__(self) -> None:
        if not 0 <= self.errno <= MAX_ERRNO:
            raise FilterSpecError(f"errno {self.errno} is out of range: use 0..{MAX_ERRNO}")

    @property
    def return_value(self) -> int:
        return SECCOMP_RET_ERRNO | self.errno


@dataclass(frozen=True)
class Notify:
    """Ask the filter's listener (SECCOMP_RET_USER_NOTIF): the calling thread sleeps in the
    kernel until the supervisor answers through the listener fd, with no ptrace stop at all.

    The notification carries the syscall number and arguments but no tag. Installing a filter
    with this action needs SECCOMP_FILTER_FLAG_NEW_LISTENER; without a listener (or once it is
    closed) the kernel fails the syscall with ENOSYS.
    """

    @property
    def return_value(self) -> int:
        return SECCOMP_RET_USER_NOTIF


Action = Allow | Kill | Trace | Errno | Notify


@dataclass(frozen=True)
class ArgCondition:
    """`args[arg] <op> value`, an unsigned comparison of the argument's low 32 bits.

    Only the low half is compared because int arguments (fds, flags) are 32-bit in the kernel
    and the upper half of the register may hold garbage. For a negative constant such as
    AT_FDCWD pass `value & 0xFFFFFFFF`.
    """

    arg: int
    op: ComparisonOp
    value: int

    def __post_init__(self) -> None:
        if not 0 <= self.arg < ARG_COUNT:
            raise FilterSpecError(f"argument index {self.arg} is out of range: use 0..5")
        if self.op not in COMPARISON_OPS:
            raise FilterSpecError(
                f"comparison {self.op!r} is not supported: use one of {', '.join(COMPARISON_OPS)}"
            )
        if not 0 <= self.value <= 0xFFFF_FFFF:
            raise FilterSpecError(
                f"comparison value {self.value} is not a 32-bit unsigned number: "
                "use 0..0xFFFFFFFF (value & 0xFFFFFFFF for a negative constant)"
            )


@dataclass(frozen=True)
class Rule:
    """What to do with `syscall`; with `when`, only if the condition holds (else the next rule)."""

    syscall: int
    action: Action
    when: ArgCondition | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.syscall < X32_SYSCALL_BIT:
            raise FilterSpecError(
                f"syscall number {self.syscall} is not a native x86_64 number: "
                "use seccomp.syscall_number(name)"
            )
        if not isinstance(self.action, Allow | Kill | Trace | Errno | Notify):
            raise FilterSpecError(
                f"action {self.action!r} is not one of Allow(), Kill(), Trace(tag), "
                "Errno(errno), Notify()"
            )


@dataclass(frozen=True)
class _Decision:
    """What the filter does with one syscall: conditional rules in order, then `fallback`."""

    conditional: tuple[Rule, ...]
    fallback: int


def build_filter(rules: Sequence[Rule]) -> Program:
    """The BPF program for `rules`: per syscall the first rule whose condition holds decides;
    a syscall with no matching rule, or not listed at all, is allowed."""
    decisions = _decide(rules)
    return assemble(
        [
            *_check_architecture(),
            *_search_tree(sorted(decisions), decisions),
            *_conditional_blocks(decisions),
            *_shared_returns(decisions),
        ]
    )


def _decide(rules: Sequence[Rule]) -> dict[int, _Decision]:
    """Per syscall, the rules that can matter; syscalls that are always allowed are left out."""
    by_syscall: dict[int, list[Rule]] = {}
    for rule in rules:
        if not isinstance(rule, Rule):
            raise FilterSpecError(f"{rule!r} is not a seccomp Rule")
        by_syscall.setdefault(rule.syscall, []).append(rule)
    decisions: dict[int, _Decision] = {}
    for syscall, syscall_rules in by_syscall.items():
        conditional: list[Rule] = []
        fallback = SECCOMP_RET_ALLOW
        for rule in syscall_rules:
            if rule.when is None:
                fallback = rule.action.return_value
                break  # the rules after an unconditional one can never be reached
            conditional.append(rule)
        # A condition whose action equals what happens anyway does not change the verdict;
        # dropping it keeps argument loads off paths that do not need them.
        while conditional and conditional[-1].action.return_value == fallback:
            conditional.pop()
        if conditional or fallback != SECCOMP_RET_ALLOW:
            decisions[syscall] = _Decision(tuple(conditional), fallback)
    return decisions


def _return_label(value: int) -> str:
    return f"ret_{value:#010x}"


def _syscall_label(syscall: int) -> str:
    return f"syscall_{syscall}"


def _target(syscall: int, decision: _Decision) -> str:
    return _syscall_label(syscall) if decision.conditional else _return_label(decision.fallback)


_X32_VERDICT = SECCOMP_RET_ERRNO | errno_codes.ENOSYS


def _check_architecture() -> list[Item]:
    return [
        load_word(SECCOMP_DATA_ARCH),
        jump_if_equal(AUDIT_ARCH_X86_64, if_false=_return_label(SECCOMP_RET_KILL_PROCESS)),
        load_word(SECCOMP_DATA_NR),
        jump_if_greater_or_equal(X32_SYSCALL_BIT, if_true=_return_label(_X32_VERDICT)),
    ]


def _search_tree(numbers: list[int], decisions: dict[int, _Decision]) -> list[Item]:
    """Code that jumps to the target of `nr` if it is in `numbers`, else to ALLOW; it never
    falls through. `numbers` is sorted."""
    allow = _return_label(SECCOMP_RET_ALLOW)
    if not numbers:
        return [ret(SECCOMP_RET_ALLOW)]
    if len(numbers) <= LEAF_SIZE:
        leaf: list[Item] = [
            jump_if_equal(number, if_true=_target(number, decisions[number]))
            for number in numbers[:-1]
        ]
        last = numbers[-1]
        leaf.append(jump_if_equal(last, _target(last, decisions[last]), allow))
        return leaf
    middle = len(numbers) // 2
    upper_half = f"nr_ge_{numbers[middle]}"
    return [
        jump_if_greater_or_equal(numbers[middle], if_true=upper_half),
        *_search_tree(numbers[:middle], decisions),
        Label(upper_half),
        *_search_tree(numbers[middle:], decisions),
    ]


def _conditional_blocks(decisions: dict[int, _Decision]) -> list[Item]:
    items: list[Item] = []
    for syscall in sorted(decisions):
        decision = decisions[syscall]
        if not decision.conditional:
            continue
        items.append(Label(_syscall_label(syscall)))
        loaded_arg: int | None = None
        for rule in decision.conditional:
            assert rule.when is not None
            if rule.when.arg != loaded_arg:
                # Little-endian: the low 32 bits of args[i] are the first word.
                items.append(load_word(SECCOMP_DATA_ARGS + 8 * rule.when.arg))
                loaded_arg = rule.when.arg
            items.append(_compare(rule.when, _return_label(rule.action.return_value)))
        items.append(ret(decision.fallback))
    return items


def _compare(condition: ArgCondition, matched: str) -> Item:
    """A jump to `matched` when the condition holds, else to the next instruction."""
    value = condition.value
    match condition.op:
        case "==":
            return jump_if_equal(value, if_true=matched)
        case "!=":
            return jump_if_equal(value, if_false=matched)
        case ">=":
            return jump_if_greater_or_equal(value, if_true=matched)
        case "<":
            return jump_if_greater_or_equal(value, if_false=matched)
        case ">":
            return jump_if_greater(value, if_true=matched)
        case "<=":
            return jump_if_greater(value, if_false=matched)
    raise FilterSpecError(f"comparison {condition.op!r} is not supported")


def _shared_returns(decisions: dict[int, _Decision]) -> list[Item]:
    values = {SECCOMP_RET_ALLOW, SECCOMP_RET_KILL_PROCESS, _X32_VERDICT}
    for decision in decisions.values():
        values.add(decision.fallback)
        values.update(rule.action.return_value for rule in decision.conditional)
    items: list[Item] = []
    for value in sorted(values):
        items += [Label(_return_label(value)), ret(value)]
    return items
