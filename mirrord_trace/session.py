"""One run's trap table: which syscalls the filter traps, with which tag, handled by what.

The filter's SECCOMP_RET_DATA tag is the index into `dispatch`, so the tracer finds the handler
for a stop with one list lookup and no decoding.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mirrord_trace.handlers.fs import FsPathHandlers
from mirrord_trace.syscall_table import (
    FS_PATH_SYSCALLS,
    REFUSED_WITH_ENOSYS,
    SYSCALL_NUMBERS,
    describe,
)
from mirrord_trace.tracer.loop import TrapEntry
from seccomp import Errno, Rule, Trace

# Paths a program never finds, whatever the mode: credentials of the developer's own machine
# that would otherwise leak into (or confuse) a program pretending to run in the pod.
DEFAULT_NOT_FOUND = (
    r"^{home}/\.kube(/|$)",
    r"^{home}/\.config/gcloud(/|$)",
    r"^{home}/\.azure(/|$)",
)


class TargetlessPolicy:
    """No target: every path is local except the not-found ones."""

    def __init__(self, not_found: Iterable[str]) -> None:
        home = re.escape(os.path.expanduser("~"))
        patterns = [p.replace("{home}", home) for p in not_found]
        self._not_found = re.compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None

    def decide(self, path: str) -> tuple[str, str]:
        if self._not_found is not None and self._not_found.search(path):
            return "not_found", "not_found pattern"
        return "local", "no target: everything else is local"


@dataclass(frozen=True)
class TrapTable:
    rules: Sequence[Rule]
    dispatch: Sequence[TrapEntry | None]


def build_trap_table(*, fs_mode: str = "read", explain: bool = False,
                     not_found: Iterable[str] = DEFAULT_NOT_FOUND) -> TrapTable:
    rules: list[Rule] = [
        Rule(SYSCALL_NUMBERS[name], Errno(errno.ENOSYS)) for name in REFUSED_WITH_ENOSYS
    ]
    dispatch: list[TrapEntry | None] = [None]  # tag 0 is never used
    if fs_mode != "local":
        fs = FsPathHandlers(TargetlessPolicy(not_found), explain=explain)
        for shape in FS_PATH_SYSCALLS.values():
            tag = len(dispatch)
            dispatch.append(
                TrapEntry(shape.name, fs.handler(shape), lambda call, s=shape: describe(s, call))
            )
            rules.append(Rule(shape.nr, Trace(tag)))
    return TrapTable(rules, dispatch)
