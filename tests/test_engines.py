"""The notification engine (--engine notify): no ptrace held, the program never outlives the
supervisor, and what it leaves behind ends with it, as under the ptrace engine.

Real programs (static C probes, sh, busybox) under the real CLI; the supervisor is killed with
a real SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, example_binary
from tests.test_supervisor import _child_pid_of, _descendants_alive, descendants_of

EXEC = [str(ROOT / ".venv" / "bin" / "mirrord-trace"), "exec"]


def _tracer_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("TracerPid:"):
            return int(line.split()[1])
    raise AssertionError("no TracerPid line")


def _wait_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = pids
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if _descendants_alive(pid)]
        if not alive:
            break
        time.sleep(0.05)
    return alive


@pytest.mark.parametrize("engine", ["ptrace", "notify"])
def test_only_the_ptrace_engine_holds_ptrace(engine: str) -> None:
    probe = str(example_binary("probe-static"))
    supervisor = subprocess.Popen([*EXEC, "--engine", engine, "--", probe, "echo-stdin"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        program = _child_pid_of(supervisor.pid, probe)
        tracer = _tracer_of(program)
        out, _ = supervisor.communicate(b"hello\n", timeout=30)
        assert out == b"hello\n" and supervisor.returncode == 0
        assert (tracer == supervisor.pid) if engine == "ptrace" else (tracer == 0)
    finally:
        supervisor.kill()
        supervisor.wait()


def test_sigkill_of_the_supervisor_kills_the_programs_whole_tree() -> None:
    """A background child and an orphaned grandchild (its parent exited) die too: the guardian
    is their subreaper."""
    probe = str(example_binary("probe-static"))
    script = f'({probe} echo-stdin < /dev/zero > /dev/null &); {probe} echo-stdin'
    supervisor = subprocess.Popen([*EXEC, "--engine", "notify", "--", "sh", "-c", script],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        probes: list[int] = []
        while time.monotonic() < deadline and len(probes) < 2:
            probes = [int(pid) for pid in descendants_of(supervisor.pid)
                      if _exe(pid) == Path(probe).resolve()]
            time.sleep(0.05)
        assert len(probes) == 2, "the probes never started"
        supervisor.kill()
        supervisor.wait(10)
        assert not _wait_gone(probes), "a program process outlived its supervisor"
    finally:
        supervisor.kill()
        supervisor.wait()


@pytest.mark.parametrize("engine", ["ptrace", "notify"])
def test_what_the_program_leaves_behind_ends_with_it(engine: str, tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    probe = str(example_binary("probe-static"))
    script = f"{probe} echo-stdin < /dev/zero > /dev/null & echo $! > {marker}; exit 7"
    out = subprocess.run([*EXEC, "--engine", engine, "--", "sh", "-c", script],
                         capture_output=True, timeout=60)
    assert out.returncode == 7
    assert not _wait_gone([int(marker.read_text())]), "a left-behind child still runs"


def test_signals_sent_to_the_supervisor_reach_the_program_under_notify() -> None:
    probe = str(example_binary("probe-static"))
    supervisor = subprocess.Popen([*EXEC, "--engine", "notify", "--", probe, "echo-stdin"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        _child_pid_of(supervisor.pid, probe)
        supervisor.send_signal(signal.SIGHUP)
        assert supervisor.wait(10) == 128 + signal.SIGHUP
    finally:
        supervisor.kill()
        supervisor.wait()


def test_an_unknown_engine_is_one_clear_line() -> None:
    out = subprocess.run([*EXEC, "--engine", "magic", "--", "true"], capture_output=True,
                         timeout=60)
    assert out.returncode == 2
    lines = out.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "--engine" in lines[0] and "ptrace" in lines[0], lines


def test_a_missing_program_under_notify_is_127_and_one_line() -> None:
    out = subprocess.run([*EXEC, "--engine", "notify", "--", "/nonexistent/program"],
                         capture_output=True, timeout=60)
    assert out.returncode == 127
    assert len(out.stderr.decode().strip().splitlines()) == 1


def _exe(pid: str) -> Path | None:
    try:
        return Path(os.readlink(f"/proc/{pid}/exe")).resolve()
    except OSError:
        return None
