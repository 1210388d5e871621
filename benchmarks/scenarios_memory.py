"""Memory over a short soak: rounds of 500 concurrent agent streams, each echoing 64 KiB, and
the agent's resident memory (peak within each round, and what stays after it) beside the local
side's.

The target is this benchmark process (as in the agent scenarios; root is needed); the echo
server is a thread of it, on loopback in its network namespace, where the agent connects.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

from benchmarks.registry import Context, ScenarioError, scenario
from benchmarks.rows import Goal, Row

STREAMS = 500
PAYLOAD = 64 * 1024


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@contextlib.contextmanager
def echo_server() -> Iterator[int]:
    """A one-thread echo server on 127.0.0.1; yields its port."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=STREAMS * 2)
    listener.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            for key, _ in selector.select(timeout=0.2):
                if key.fileobj is listener:
                    with contextlib.suppress(BlockingIOError):
                        connection, _ = listener.accept()
                        connection.settimeout(30)  # echoes are small: sendall completes
                        selector.register(connection, selectors.EVENT_READ)
                    continue
                connection = key.fileobj
                assert isinstance(connection, socket.socket)
                try:
                    data = connection.recv(PAYLOAD)
                    if data:
                        connection.sendall(data)
                        continue
                except OSError:
                    pass
                selector.unregister(connection)
                connection.close()

    thread = threading.Thread(target=serve, name="bench-echo", daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for key in list(selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        selector.close()


def _round(client, port: int, agent_pid: int) -> tuple[float, float]:
    """500 streams at once, 64 KiB echoed on each; -> (agent peak RSS, agent RSS after)."""
    payload = os.urandom(PAYLOAD)
    streams = [
        client.open_stream(family=socket.AF_INET, host="127.0.0.1", port=port)
        for _ in range(STREAMS)
    ]
    try:
        for stream in streams:
            stream.socket.sendall(payload)
        peak = rss_mb(agent_pid)
        for stream in streams:
            received = 0
            while received < PAYLOAD:
                chunk = stream.socket.recv(1 << 20)
                if not chunk:
                    raise ScenarioError("an echo stream ended early")
                received += len(chunk)
            peak = max(peak, rss_mb(agent_pid))
    finally:
        for stream in streams:
            stream.socket.close()
    return peak, rss_mb(agent_pid)


@scenario(
    "memory-soak",
    baseline=None,
    goals={"agent": Goal(max_median=80), "agent: growth": Goal(max_median=10)},
)
def memory_soak(ctx: Context) -> list[Row]:
    """500 concurrent agent streams echoing 64 KiB, round after round: agent and local RSS."""
    if os.geteuid() != 0:
        raise ScenarioError("the soak starts a local agent, which needs root")
    from mirrord_trace.local_target import LocalAgent, TargetError

    rounds = 3 if ctx.quick else 20
    peaks, after, local = [], [], []
    try:
        with echo_server() as port, LocalAgent(os.getpid()) as client:
            agent = client.session_info["agent_pid"]
            for _ in range(rounds):
                peak, rest = _round(client, port, agent)
                peaks.append(peak)
                after.append(rest)
                local.append(rss_mb(os.getpid()))
    except TargetError as error:
        raise ScenarioError(str(error)) from None
    growth = "RSS after the last round - after the first"
    return [
        ctx.row("agent", f"RSS peak, {STREAMS} streams", "MB", peaks),
        ctx.row("agent: growth", growth, "MB", [after[-1] - after[0]]),
        ctx.row("local side: growth", growth, "MB", [local[-1] - local[0]]),
    ]
