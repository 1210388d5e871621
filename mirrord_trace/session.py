"""One run's trap table: which syscalls the filter traps, with which tag, handled by what.

Each feature family (fs, outgoing, dns, incoming) contributes `Trap`s from its own module; the
session merges them. The filter's SECCOMP_RET_DATA tag is the index into `dispatch`, so the
tracer finds the handler for a stop with one list lookup and no decoding.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mirrord_trace.handlers.actions import Action
from mirrord_trace.handlers.call import SyscallCall
from mirrord_trace.handlers.trap import Family, SessionContext, Trap
from mirrord_trace.syscall_table import REFUSED_WITH_ENOSYS, SYSCALL_NUMBERS, describe
from mirrord_trace.tracer.dispatch import TrapEntry
from seccomp import Errno, Notify, Rule, Trace

if TYPE_CHECKING:
    from mirrord_trace.config import Config
    from mirrord_trace.skipped_processes import SkippedProcesses


@dataclass(frozen=True)
class TrapTable:
    rules: Sequence[Rule]
    dispatch: Sequence[TrapEntry | None]  # by filter tag, for ptrace stops
    notified: Mapping[int, TrapEntry] = field(default_factory=dict)  # by syscall number


def families(context: SessionContext) -> list[Family]:
    """The feature families this session needs, imported here so that the others cost no
    import time (start-up is benchmarked): without a target only the filesystem rules apply."""
    from mirrord_trace.handlers import fs

    # ipv6 first: its refusal answers before the outgoing family looks at a socket().
    network = context.config.feature.network
    first: list[Family] = []
    if not network.ipv6:
        from mirrord_trace.handlers import ipv6

        first.append(ipv6.traps)
    if context.agent is None:
        return [*first, fs.traps]
    from mirrord_trace.handlers import hostname, incoming, outgoing

    return [*first, fs.traps, incoming.traps, outgoing.traps, hostname.traps]


def build_trap_table(context: SessionContext, chosen: Sequence[Family] | None = None) -> TrapTable:
    by_syscall: dict[str, list[Trap]] = {}
    for family in families(context) if chosen is None else chosen:
        for trap in family(context):
            by_syscall.setdefault(trap.shape.name, []).append(trap)
    # Without a target nothing is remote: skipping would change next to nothing (the default
    # not-found paths) and cost an exec notification; targetless runs keep their fast path.
    skipper = _skipped_processes(context.config) if context.agent is not None else None
    if skipper is not None:
        from mirrord_trace.skipped_processes import EXEC_SHAPES

        for shape in EXEC_SHAPES:  # to judge a process again when it executes a program
            by_syscall.setdefault(shape.name, []).append(Trap(shape, _runs_as_is, notify=True))

    rules: list[Rule] = [
        Rule(SYSCALL_NUMBERS[name], Errno(errno.ENOSYS)) for name in REFUSED_WITH_ENOSYS
    ]
    dispatch: list[TrapEntry | None] = [None]  # tag 0 is never used
    notified: dict[int, TrapEntry] = {}
    for name, traps in by_syscall.items():
        shape = traps[0].shape
        handler = _merged(traps)
        if skipper is not None:
            handler = skipper.wrap(handler, execs=name in ("execve", "execveat"))
        entry = TrapEntry(name, handler, lambda call, s=shape: describe(s, call))
        conditions = {trap.when for trap in traps}
        when = conditions.pop() if len(conditions) == 1 else None
        # --trace shows each call's result, which only an exit stop can see: it keeps ptrace.
        if all(trap.notify for trap in traps) and not context.explain:
            notified[shape.nr] = entry
            rules.append(Rule(shape.nr, Notify(), when=when))
        else:
            rules.append(Rule(shape.nr, Trace(len(dispatch)), when=when))
            dispatch.append(entry)
    return TrapTable(rules, dispatch, notified)


def _runs_as_is(call: SyscallCall) -> Action | None:
    return None


def _skipped_processes(config: Config) -> SkippedProcesses | None:
    """skip_processes / skip_build_tools: None when no process is to be skipped."""
    from mirrord_trace.skipped_processes import SkippedProcesses, skipped_names

    names = skipped_names(
        config.skip_processes, config.skip_build_tools, config.skip_extra_build_tools
    )
    return SkippedProcesses(names) if names else None


def _merged(traps: list[Trap]) -> Callable[[SyscallCall], Action | None]:
    if len(traps) == 1:
        return traps[0].handler  # the tracer treats None as "runs as it is"
    handlers = [trap.handler for trap in traps]

    def chain(call: SyscallCall) -> Action | None:
        for handler in handlers:
            action = handler(call)
            if action is not None:
                return action
        return None

    return chain


def trapped_syscall_names(context: SessionContext) -> list[str]:
    """The syscalls a session with this configuration traps (benchmarks give strace the same)."""
    table = build_trap_table(context)
    traced = [entry.name for entry in table.dispatch if entry is not None]
    return traced + [entry.name for entry in table.notified.values()]
