"""From a trapped call to a handler's action: shared by ptrace stops and seccomp notifications.

A handler that raises must not kill the program or the supervisor: the call fails with an errno
(EFAULT for a bad pointer in the program, else the error's own errno or EIO), and the supervisor
says so once per kind of failure.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable
from dataclasses import dataclass

from mirrord_trace.handlers.actions import ALLOW, Action, Emulate
from mirrord_trace.handlers.call import SyscallCall
from mirrord_trace.tracer.memory import TraceeMemoryError

Handler = Callable[[SyscallCall], Action | None]  # None: not claimed, runs as it is
Describe = Callable[[SyscallCall], str]


@dataclass(frozen=True, slots=True)
class TrapEntry:
    """What the supervisor does for one trapped syscall."""

    name: str
    handler: Handler
    describe: Describe


class HandlerFailures:
    """Turns a handler's exception into the errno the program sees, reported once per kind."""

    def __init__(self) -> None:
        self._reported: set[tuple[str, str]] = set()

    def decide(self, entry: TrapEntry, call: SyscallCall) -> Action:
        """The entry's action for the call; ALLOW when no family claims it."""
        try:
            action = entry.handler(call)
        except TraceeMemoryError:
            return Emulate(-errno.EFAULT, why="bad pointer")
        except Exception as error:  # a handler bug or a lost agent must not kill the program
            return self.failed(entry.name, error)
        return ALLOW if action is None else action

    def failed(self, name: str, error: Exception) -> Emulate:
        code = getattr(error, "errno", None)
        code = code if isinstance(code, int) and 0 < code < 4096 else errno.EIO
        key = (name, type(error).__name__)
        if key not in self._reported:
            self._reported.add(key)
            sys.stderr.write(
                f"mirrord-trace: {name} failed in the supervisor ({type(error).__name__}: "
                f"{error}); the program sees {errno.errorcode.get(code, code)}\n"
            )
            sys.stderr.flush()
        return Emulate(-code, why=f"failed: {error}")
