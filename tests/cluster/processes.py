"""Detached daemons of the cluster: each one's log and pid file live under build/cluster, so that
`down` (or a later session) finds exactly the processes `up` started."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from tests.cluster import layout


def start(name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
    """Starts argv in a session of its own (it outlives `make cluster`), output to logs/NAME.log."""
    layout.LOGS.mkdir(parents=True, exist_ok=True)
    layout.PIDS.mkdir(parents=True, exist_ok=True)
    with open(layout.LOGS / f"{name}.log", "ab") as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            cwd=layout.STATE,
        )
    (layout.PIDS / f"{name}.pid").write_text(f"{process.pid}\n")
    return process.pid


def pid_of(name: str) -> int | None:
    """The pid in NAME.pid if that process still runs the command it was started with."""
    path = layout.PIDS / f"{name}.pid"
    try:
        pid = int(path.read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def running(name: str) -> bool:
    return pid_of(name) is not None


def log_tail(name: str, lines: int = 20) -> str:
    path = layout.LOGS / f"{name}.log"
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def stop(name: str, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; the pid file goes either way."""
    pid = pid_of(name)
    if pid is not None:
        _terminate(pid, grace)
    (layout.PIDS / f"{name}.pid").unlink(missing_ok=True)


def _terminate(pid: int, grace: float) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    while _alive(pid):
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    # Our own children (started by this interpreter) must be reaped to stop existing.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def kill_pid(pid: int, grace: float = 5.0) -> None:
    _terminate(pid, grace)
