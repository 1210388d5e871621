"""Which engine catches the trapped calls, and the notification engine's filter.

- ptrace: SECCOMP_RET_TRACE for the calls that need a stop (argument rewrites, exit stops,
  parking), notifications for those a handler only answers; the supervisor is the program's
  tracer, so no debugger can trace it.
- notify: SECCOMP_RET_USER_NOTIF for every trap and no ptrace at all, so a debugger (gdb, dlv,
  strace, an IDE) can run the program or attach to it. Handlers are the same; the actions only
  ptrace can carry out are listed in docs/debugging.md.

A program that is itself a debugger gets the notification engine without being asked, and its
own calls run unchanged: only the processes it starts (what it debugs) see the target.
"""

from __future__ import annotations

import os
import sys
from enum import StrEnum

from mirrord_trace.handlers.actions import ALLOW, Action
from mirrord_trace.handlers.call import SyscallCall
from mirrord_trace.session import TrapTable
from mirrord_trace.syscall_table import SYSCALL_NUMBERS
from mirrord_trace.tracer.dispatch import TrapEntry
from seccomp import Notify, Rule, Trace


class Engine(StrEnum):
    PTRACE = "ptrace"
    NOTIFY = "notify"


# Programs that trace (or start something to be traced by) ptrace: they need the notification
# engine, and only their children are served. By the program's file name.
DEBUGGERS = frozenset({
    "gdb", "gdbserver", "gdb-multiarch", "dlv", "lldb", "lldb-server", "strace", "ltrace", "rr",
})


def is_debugger(path: str) -> bool:
    return os.path.basename(path) in DEBUGGERS


def chosen_engine(requested: str | None, path: str) -> Engine:
    """The engine for this program: as asked, else notify for a debugger, else ptrace."""
    if requested is not None:
        return Engine(requested)
    return Engine.NOTIFY if is_debugger(path) else Engine.PTRACE


def notified_everywhere(table: TrapTable) -> tuple[list[Rule], dict[int, TrapEntry]]:
    """The table's rules with every ptrace trap turned into a notification (same conditions),
    and the entries by syscall number for the notification thread."""
    rules: list[Rule] = []
    entries = dict(table.notified)
    for rule in table.rules:
        action = rule.action
        if isinstance(action, Trace):
            entry = table.dispatch[action.tag]
            assert entry is not None
            entries[rule.syscall] = entry
            rules.append(Rule(rule.syscall, Notify(), when=rule.when))
        else:
            rules.append(rule)
    return rules, entries


# ptrace(2) requests that make the caller (or another process) a tracee.
_BECOMES_TRACED = {0: "PTRACE_TRACEME", 16: "PTRACE_ATTACH", 0x4206: "PTRACE_SEIZE"}


def with_debugger_hint(table: TrapTable) -> TrapTable:
    """The ptrace engine's table plus a trap on ptrace(2) that says, once, why a debugger the
    program started (through a wrapper: `env dlv ...`, a script) cannot trace anything and what
    to do; the call still fails as the kernel decides (EPERM)."""
    said: list[bool] = []

    def hint(call: SyscallCall) -> Action:
        request = _BECOMES_TRACED.get(call.args[0] & 0xFFFFFFFF)
        if request is not None and not said:
            said.append(True)
            sys.stderr.write(
                f"mirrord-trace: process {call.tgid} asked to trace ({request}), but under the "
                "ptrace engine mirrord-trace is the tracer; run a debugger with --engine notify "
                "(docs/debugging.md)\n"
            )
            sys.stderr.flush()
        return ALLOW

    nr = SYSCALL_NUMBERS["ptrace"]
    entry = TrapEntry("ptrace", hint, lambda call: f"ptrace({call.args[0]}, ...)")
    rules = [*table.rules, Rule(nr, Trace(len(table.dispatch)))]
    return TrapTable(rules, [*table.dispatch, entry], table.notified)
