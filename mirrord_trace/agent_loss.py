"""Losing the agent mid-run ends the session (issue #20: a stealing server went on running
with no traffic after one stderr line).

Once the connection is gone (the agent died, or said nothing for AGENT_SILENCE_TIMEOUT) nothing
the program does remotely can work any more, so mirrord-trace says so in one line and ends the
program: SIGTERM through the supervisor's own signal forwarding (the program may clean up),
SIGKILL for what is still traced after a grace period. `exec` then exits with
EXIT_AGENT_LOST, as docs/troubleshooting.md says.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from pathlib import Path

from mirrord_trace.agent_client import AgentClient, AgentLost
from mirrord_trace.signal_mask import helper_threads_spared

EXIT_AGENT_LOST = 1
GRACE = 3.0


class AgentLossWatch:
    """Installed on the session's client before the program starts."""

    def __init__(self, client: AgentClient) -> None:
        self.lost: AgentLost | None = None
        client.on_lost = self._on_lost

    def _on_lost(self, error: AgentLost) -> None:
        self.lost = error
        print(
            f"mirrord-trace: error: lost the connection to the agent: {error.message} (the "
            "program is being ended: nothing remote works any more; run mirrord-trace again)",
            file=sys.stderr,
            flush=True,
        )
        # The supervisor forwards the termination signals it receives to the program.
        os.kill(os.getpid(), signal.SIGTERM)
        killer = threading.Timer(GRACE, _kill_traced_children)
        killer.daemon = True
        with helper_threads_spared():
            killer.start()


def _kill_traced_children() -> None:
    """SIGKILL this process's children that it traces (the program, not the agent or a
    helper): what ignored SIGTERM."""
    me = str(os.getpid())
    for children in Path("/proc/self/task").glob("*/children"):
        with contextlib.suppress(OSError):
            for child in children.read_text().split():
                if _tracer_of(child) == me:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(child), signal.SIGKILL)


def _tracer_of(pid: str) -> str | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("TracerPid:"):
                return line.split()[1]
    return None
