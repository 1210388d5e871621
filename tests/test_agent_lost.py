"""Losing the agent mid-run ends the session: mirrord-trace says so in one clear line (no
traceback, no hang), ends the program and exits with EXIT_AGENT_LOST (docs/troubleshooting.md).

The agent is the real one the CLI starts for the sandbox pod; the tests kill it with SIGKILL, or
stop it with SIGSTOP (a hung agent: noticed by its silence, not by a closed connection), while
a program keeps opening a pod file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

import pytest

from mirrord_trace.agent_loss import EXIT_AGENT_LOST
from mirrord_trace.protocol import AGENT_SILENCE_TIMEOUT
from tests.test_fs_remote import MIRRORD_TRACE, probe


def agent_of(cli_pid: int, timeout: float = 20.0) -> int:
    """The pid of the agent the CLI process started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as stat_file:
                    parent = int(stat_file.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                    argv = cmdline.read().split(b"\0")
            except (OSError, IndexError, ValueError):
                continue
            if parent == cli_pid and b"agent" in argv:
                return int(entry)
        time.sleep(0.05)
    raise AssertionError("the CLI started no agent")


def run_until_the_agent_is(sandbox, tmp_path, binary: str, signum: int) -> tuple[int, str, int]:
    """Run a program that keeps opening a pod file, send the agent `signum` once it is busy;
    -> (mirrord-trace's exit status, its stderr, the agent's pid)."""
    trace = tmp_path / "trace"
    command = [
        MIRRORD_TRACE, "exec", "--target", f"pid/{sandbox.target_pid}", "--trace", str(trace),
        "--", probe(binary), "openloop", "100000000", "/app/config.yaml",
    ]  # fmt: skip
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        agent = agent_of(process.pid)
        try:
            deadline = time.monotonic() + 30
            # Wait until the program is busy with remote opens.
            while '"/app/config.yaml"' not in (trace.read_text() if trace.exists() else ""):
                assert time.monotonic() < deadline, "the program never opened the pod file"
                time.sleep(0.05)
            os.kill(agent, signum)
            _, stderr = process.communicate(timeout=60)
            # Nothing is left behind, not even a stopped agent.
            assert not os.path.exists(f"/proc/{agent}")
        finally:
            process.kill()
            with contextlib.suppress(ProcessLookupError):
                os.kill(agent, signal.SIGKILL)
                os.kill(agent, signal.SIGCONT)
    return process.returncode, stderr.decode(), agent


def one_line_about_the_loss(stderr: str) -> str:
    ours = [line for line in stderr.splitlines() if line.startswith("mirrord-trace:")]
    assert len(ours) == 1, stderr
    assert "lost the connection to the agent" in ours[0]
    assert "Traceback" not in stderr
    return ours[0]


@pytest.mark.parametrize("binary", ["probe-static", "probe-go"])
def test_a_killed_agent_ends_the_session(sandbox, tmp_path, binary: str) -> None:
    status, stderr, _ = run_until_the_agent_is(sandbox, tmp_path, binary, signal.SIGKILL)
    assert status == EXIT_AGENT_LOST
    one_line_about_the_loss(stderr)


def test_a_hung_agent_is_given_up_for_its_silence(sandbox, tmp_path) -> None:
    status, stderr, _ = run_until_the_agent_is(sandbox, tmp_path, "probe-static", signal.SIGSTOP)
    assert status == EXIT_AGENT_LOST
    line = one_line_about_the_loss(stderr)
    assert f"no word from the agent for {AGENT_SILENCE_TIMEOUT:.0f} s" in line
