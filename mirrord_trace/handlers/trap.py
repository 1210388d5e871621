"""What a feature family gives the session: its traps, built from the session's context.

The handlers import this module, never the session: the session (mirrord_trace.session)
imports the families and merges their traps into the filter and the tracer's dispatch table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mirrord_trace.handlers.actions import Action
from mirrord_trace.handlers.call import SyscallCall
from mirrord_trace.syscall_table import SyscallShape
from seccomp import ArgCondition

if TYPE_CHECKING:
    from mirrord_trace.config import Config

# A family's handler returns None for a call that is not its business, so that several
# families can share one syscall (close, read, write...); the first answer wins.
FamilyHandler = Callable[[SyscallCall], "Action | None"]


@dataclass(frozen=True)
class SessionContext:
    """What feature families build their handlers from."""

    config: Config
    agent: Any | None = None  # mirrord_trace.agent_client.AgentClient, None when targetless
    explain: bool = False  # --trace is on: handlers say why they decided
    supervisor_pid: int = 0
    extras: dict[str, Any] = field(default_factory=dict)
    program: str = ""  # the program's path as executed (the fs defaults read it locally)
    # Called once the program has ended, last added first, while the agent is still
    # connected (e.g. the fs family writes files back, then removes its local copies).
    end_hooks: list[Callable[[], None]] = field(default_factory=list)

    def end(self) -> None:
        """Run the end hooks; every hook runs even when one fails (the first error is raised)."""
        failure: BaseException | None = None
        while self.end_hooks:
            try:
                self.end_hooks.pop()()
            except BaseException as error:  # re-raised below, after the other hooks
                failure = failure or error
        if failure is not None:
            raise failure


@dataclass(frozen=True)
class Trap:
    shape: SyscallShape
    handler: FamilyHandler
    when: ArgCondition | None = None  # trap only when this holds; otherwise the call runs
    # The handler only ever returns Allow, Emulate or None, so the call can be decided through a
    # seccomp notification, without a ptrace stop (see mirrord_trace.tracer.notifications).
    notify: bool = False



Family = Callable[[SessionContext], list[Trap]]
