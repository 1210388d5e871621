"""Losing the agent mid-run: the program's next remote operation fails with EIO at once, and the
supervisor says so in one clear line (no traceback, no hang).

The agent is the real one the CLI starts for the sandbox pod; the test kills it with SIGKILL
while a program keeps opening a pod file.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import time

import pytest

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


@pytest.mark.parametrize("binary", ["probe-static", "probe-go"])
def test_killed_agent_turns_remote_operations_into_eio(sandbox, tmp_path, binary: str) -> None:
    trace = tmp_path / "trace"
    command = [
        MIRRORD_TRACE, "exec", "--target", f"pid/{sandbox.target_pid}", "--trace", str(trace),
        "--", probe(binary), "openloop", "100000000", "/app/config.yaml",
    ]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        try:
            agent = agent_of(process.pid)
            deadline = time.monotonic() + 30
            # Wait until the program is busy with remote opens.
            while '"/app/config.yaml"' not in (trace.read_text() if trace.exists() else ""):
                assert time.monotonic() < deadline, "the program never opened the pod file"
                time.sleep(0.05)
            os.kill(agent, signal.SIGKILL)
            killed_at = time.monotonic()
            _, stderr = process.communicate(timeout=30)
            ended_after = time.monotonic() - killed_at
        finally:
            process.kill()
    assert ended_after < 1.0, f"the program ran on for {ended_after:.2f} s"
    assert process.returncode == errno.EIO  # the probe exits with the errno of its failed open
    lines = stderr.decode().splitlines()
    ours = [line for line in lines if line.startswith("mirrord-trace:")]
    assert len(ours) == 1, lines
    assert "lost the connection to the agent" in ours[0]
    assert "Traceback" not in stderr.decode()
    assert "-1 EIO" in trace.read_text()
