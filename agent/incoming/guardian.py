"""The guardian: removes an agent's iptables rules when the agent ends, even by SIGKILL.

The agent starts it before adding its first rule and keeps the write end of a pipe whose read
end is the guardian's stdin. The kernel closes that pipe when the agent dies, however it dies;
the guardian then deletes every rule carrying the agent's tag and exits. It runs in the
agent's network namespace (inherited at fork), in its own session, ignoring the terminal's
signals, so whatever kills the agent does not kill it too.

    python -m agent.incoming.guardian TAG
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import IO

from agent.incoming.rules import remove_rules

READY = b"ready\n"


class _Terminated(Exception):
    pass


class GuardianError(Exception):
    """The guardian could not be started; stealing would not be safe without it."""


class Guardian:
    """The agent's handle on its guardian process."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self._process is not None:
            return
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "agent.incoming.guardian", self.tag],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                # Not the agent's stderr: whoever reads that would wait for the guardian too.
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                cwd="/",
            )
        except OSError as error:
            raise GuardianError(f"cannot start the rule guardian: {error.strerror}") from None
        assert process.stdout is not None
        if process.stdout.readline() != READY:
            process.kill()
            process.wait()
            raise GuardianError("the rule guardian failed to start")
        process.stdout.close()
        self._process = process

    def stop(self) -> None:
        """The agent removed its rules itself: let the guardian check once more and go."""
        process, self._process = self._process, None
        if process is None:
            return
        _close(process.stdin)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid


def _close(stream: IO[bytes] | None) -> None:
    if stream is not None:
        stream.close()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m agent.incoming.guardian TAG", file=sys.stderr)
        return 2
    tag = argv[0]
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGPIPE):
        signal.signal(signum, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        os.write(1, READY)
        os.close(1)
        while os.read(0, 4096):
            pass  # the agent never writes: any return of read means it is gone
    except _Terminated:
        pass  # asked to go: the rules go first
    remove_rules(lambda comment: comment == tag)
    return 0


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
