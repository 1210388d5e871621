"""Helpers for the incoming-traffic tests (no tests here): traced servers, the nat table, HTTP.

Every traced program runs with `--fs-mode local` so that these tests measure incoming traffic
only (the program's own files are this machine's).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import queue
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from agent.incoming.rules import COMMENT_PREFIX
from mirrord_trace.sandbox import SandboxInfo
from tests.conftest import ROOT

MIRRORD_TRACE = str(ROOT / ".venv" / "bin" / "mirrord-trace")
NSENTER = "/usr/bin/nsenter"
START_TIMEOUT = 40.0


def nat_rules(sandbox: SandboxInfo) -> list[str]:
    """Our rules in the target's nat table (IPv4 and IPv6), as iptables-save prints them."""
    found = []
    for save in ("iptables-save", "ip6tables-save"):
        out = subprocess.run(
            [NSENTER, f"--net={sandbox.netns_path}", save, "-t", "nat"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        found += [line for line in out.splitlines() if COMMENT_PREFIX in line]
    return found


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as listing:
                found += [int(child) for child in listing.read().split()]
    return found


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@dataclass
class TracedServer:
    """A program under `mirrord-trace exec` whose stdout lines are collected as they come."""

    process: subprocess.Popen[bytes]
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    seen: list[str] = field(default_factory=list)
    stderr: bytes = b""

    @property
    def agent_pid(self) -> int:
        return next(p for p in children(self.process.pid) if "agent" in cmdline(p))

    @property
    def program_pid(self) -> int:
        return next(p for p in children(self.process.pid) if "agent" not in cmdline(p))

    def guardian_pid(self) -> int | None:
        return next(
            (p for p in children(self.agent_pid) if "agent.incoming.guardian" in cmdline(p)), None
        )

    def next_line(self, timeout: float = 20.0) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"no output from the traced program within {timeout:g} s; "
                f"so far: {self.seen}; stderr: {self._stderr_now()}"
            ) from None
        self.seen.append(line)
        return line

    def wait_for(self, expected: Iterable[str], timeout: float = 30.0) -> None:
        """Every expected line shows up (in any order, others allowed between)."""
        missing = set(expected) - set(self.seen)
        deadline = time.monotonic() + timeout
        while missing:
            missing.discard(self.next_line(max(0.1, deadline - time.monotonic())))

    def _stderr_now(self) -> str:
        return "(still running)" if self.process.poll() is None else self.stderr.decode()

    def stop(self) -> None:
        """End the session the usual way: the program exits, mirrord-trace winds down."""
        if self.process.poll() is not None:
            return
        agent = next((p for p in children(self.process.pid) if "agent" in cmdline(p)), None)
        for pid in children(self.process.pid):
            if pid != agent:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if agent is not None and alive(agent):  # only after a failure: never leave it behind
            os.kill(agent, signal.SIGKILL)


def real_listening_ports(pid: int) -> set[int]:
    """The TCP ports process `pid`'s listening sockets are really bound to on this machine."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for row in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] == "0A" and fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _listened(trace: Path) -> bool:
    """The trace has a listen() that succeeded (its line is written once the port is
    subscribed)."""
    if not trace.exists():
        return False
    return any(
        "] listen(" in line and line.endswith("= 0") for line in trace.read_text().splitlines()
    )


@contextlib.contextmanager
def traced_server(
    sandbox: SandboxInfo,
    argv: list[str],
    *options: str,
    config: dict | None = None,
    tmp_path: Path | None = None,
    ready: str | None = "listening",
) -> Iterator[TracedServer]:
    """Run argv under mirrord-trace against the sandbox; yields once it printed `ready`, or
    (ready=None, for a silent program) once its trace shows a successful listen()."""
    command = [MIRRORD_TRACE, "exec", "--fs-mode", "local", "--target", f"pid/{sandbox.target_pid}"]
    if config is not None or ready is None:
        assert tmp_path is not None, "give tmp_path for a config file or a trace"
    if config is not None:
        path = tmp_path / f"incoming-{time.monotonic_ns()}.json"
        path.write_text(json.dumps(config))
        command += ["-f", str(path)]
    trace = tmp_path / f"trace-{time.monotonic_ns()}.txt" if ready is None else None
    if trace is not None:
        command += ["--trace", str(trace)]
    command += [*options, "--", *argv]
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    server = TracedServer(process)

    def read_stdout() -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            server.lines.put(raw.decode(errors="replace").rstrip("\n"))

    def read_stderr() -> None:
        assert process.stderr is not None
        server.stderr = process.stderr.read()

    threading.Thread(target=read_stdout, daemon=True).start()
    stderr_reader = threading.Thread(target=read_stderr, daemon=True)
    stderr_reader.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT
        if trace is not None:
            wait_until(lambda: _listened(trace), START_TIMEOUT, f"{argv[0]} to listen")
        else:
            assert ready is not None
            while not server.next_line(max(0.1, deadline - time.monotonic())).startswith(ready):
                pass
        yield server
    finally:
        server.stop()
        stderr_reader.join(timeout=5)


def http_request(
    host: str,
    port: int,
    method: str = "GET",
    path: str = "/",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> tuple[int, bytes]:
    """One request on a new connection: (status, body)."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def raw_exchange(host: str, port: int, request: bytes, timeout: float = 30.0) -> bytes:
    """Send `request`, half-close, and read the whole answer."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@contextlib.contextmanager
def in_pod(pod: SandboxInfo, argv: list[str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A server of the pod's own, in its network namespace, listening on `port`."""
    process = subprocess.Popen(
        [NSENTER, f"--net={pod.netns_path}", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    try:

        def listening() -> bool:
            with socket.socket() as sock:
                return sock.connect_ex((pod.target_addr, port)) == 0

        wait_until(listening, 30, f"the pod's {argv[0]} on port {port}")
        yield process
    finally:
        process.terminate()
        process.wait(10)
        assert not nat_rules(pod), "steal rules left behind in the pod"
