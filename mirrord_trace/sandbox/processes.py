"""Starting, watching and stopping the sandbox's processes (all of them, however started)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from mirrord_trace.sandbox.errors import SandboxError

_POLL_SECONDS = 0.01
_TCP_LISTEN = "0A"
_UDP_UNCONNECTED = "07"

# Processes this Python process started: they are its children, so it must reap them itself
# (an unreaped child stays behind as a zombie).
_children: dict[int, subprocess.Popen[bytes]] = {}


def spawn(argv: Sequence[str], env: Mapping[str, str], log_path: Path) -> int:
    """Start a long-lived sandbox process detached from the caller's session; output to a log."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            list(argv),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    _children[process.pid] = process
    return process.pid


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name may contain spaces and parentheses: split after its last ')'.
    return text[text.rindex(")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """Clock ticks after boot at which pid started; with the pid it names one process for good."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def is_running(pid: int, started: int | None = None) -> bool:
    """True when pid is a live (not zombie) process and, if given, started at `started`."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return started is None or int(fields[19]) == started


def read_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (entry.decode(errors="surrogateescape").partition("=") for entry in raw.split(b"\0"))
    return {key: value for key, _, value in pairs if key}


def _socket_table(pid: int, table: str) -> list[list[str]]:
    try:
        lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
    except (FileNotFoundError, ProcessLookupError):
        return []
    return [line.split() for line in lines]


def _decode_port(hex_endpoint: str) -> int:
    return int(hex_endpoint.rsplit(":", 1)[1], 16)


def is_listening(pid: int, protocol: str, port: int) -> bool:
    """Whether pid's network namespace has a listening socket on port (any address)."""
    wanted_state = _TCP_LISTEN if protocol == "tcp" else _UDP_UNCONNECTED
    for table in (protocol, f"{protocol}6"):
        for row in _socket_table(pid, table):
            if row[3] == wanted_state and _decode_port(row[1]) == port:
                return True
    return False


def log_tail(log_path: Path, lines: int = 3) -> str:
    try:
        text = log_path.read_text(errors="replace").strip()
    except FileNotFoundError:
        return "(no output)"
    return " | ".join(text.splitlines()[-lines:]) or "(no output)"


def wait_until_listening(
    pid: int, protocol: str, port: int, what: str, log_path: Path, timeout: float = 10.0
) -> None:
    deadline = time.monotonic() + timeout
    while not is_listening(pid, protocol, port):
        if not is_running(pid):
            raise SandboxError(f"{what} exited before listening on {protocol}/{port}: "
                               f"{log_tail(log_path)}")
        if time.monotonic() > deadline:
            raise SandboxError(f"{what} did not listen on {protocol}/{port} within {timeout:g}s: "
                               f"{log_tail(log_path)}")
        time.sleep(_POLL_SECONDS)


def _same_file(path: str, identity: os.stat_result) -> bool:
    try:
        found = os.stat(path)
    except OSError:
        return False
    return (found.st_dev, found.st_ino) == (identity.st_dev, identity.st_ino)


def processes_inside(netns_path: Path, root: Path) -> set[int]:
    """Every live process in the sandbox: in its network namespace or chrooted into its root."""
    try:
        netns_identity: os.stat_result | None = os.stat(netns_path)
    except OSError:
        netns_identity = None
    root_text = str(root)
    found: set[int] = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        in_netns = netns_identity is not None and _same_file(f"/proc/{pid}/ns/net", netns_identity)
        try:
            in_root = os.readlink(f"/proc/{pid}/root") == root_text
        except OSError:
            in_root = False
        if (in_netns or in_root) and is_running(pid):
            found.add(pid)
    return found


def _signal_all(pids: Iterable[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def reap_finished_children() -> None:
    """Collect the exit status of sandbox processes this process started that have died (say,
    after another process ran `down`), so they do not linger as zombies."""
    for pid, process in list(_children.items()):
        if process.poll() is not None:
            del _children[pid]


def _wait_gone(pids: set[int], timeout: float) -> set[int]:
    deadline = time.monotonic() + timeout
    remaining = set(pids)
    while remaining and time.monotonic() < deadline:
        reap_finished_children()
        remaining = {pid for pid in remaining if is_running(pid)}
        if remaining:
            time.sleep(_POLL_SECONDS)
    return remaining


def stop_processes(pids: set[int], also_reap: Iterable[int] = (), grace: float = 1.0) -> None:
    """SIGTERM, then SIGKILL what is left; returns once none is running.

    Our own children among `pids` and `also_reap` (which may have died earlier) are reaped.
    """
    _signal_all(pids, signal.SIGTERM)
    left = _wait_gone(pids, grace)
    if left:
        _signal_all(left, signal.SIGKILL)
        left = _wait_gone(left, 5.0)
    if left:
        raise SandboxError(f"processes {sorted(left)} survived SIGKILL; check them with ps")
    # A dead child is a zombie until waited for, however it died.
    for pid in (pids | set(also_reap)) & _children.keys():
        _children.pop(pid).wait()
