"""500 concurrent outgoing connections from one Go program through the pod, 1 MiB each way,
checksummed; the supervisor's (and the agent's) memory stays bounded by flow control, far
below the gigabyte that passes through them."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from mirrord_trace.protocol.flow import STREAM_WINDOW
from tests.conftest import example_binary
from tests.test_outgoing_support import MIRRORD_TRACE, pod_server

# An echo server with a backlog for 500 connections at once (the pod's own echo service queues
# only 5: past that, SYN cookies and a full accept queue make the kernel reset connections,
# which is the pod's behaviour, not what this test is about).
ECHO_SERVER = r"""
import asyncio, sys

async def echo(reader, writer):
    while data := await reader.read(262144):
        writer.write(data)
        await writer.drain()
    writer.close()

async def main():
    server = await asyncio.start_server(echo, sys.argv[1], 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()

asyncio.run(main())
"""

CONNECTIONS = 500
BYTES_EACH_WAY = 1024 * 1024
# 500 MiB pass each way. Flow control lets a stream hold at most one window (STREAM_WINDOW)
# per direction in the supervisor, and in the agent one window towards a slow target socket
# plus asyncio's own buffers; without it, everything the echo service has not yet taken (or
# the program not yet read) would pile up. Here the program reads its echoes as they come, so
# the supervisor needs a few dozen MiB (measured: ~35); the agent buffers for the pod's echo
# service, a slow Python server (measured: ~220). The limits leave room for slower machines
# and stay far below the data moved.
SUPERVISOR_LIMIT = 128 * 1024 * 1024
AGENT_LIMIT = min(512 * 1024 * 1024, 64 * 1024 * 1024 + CONNECTIONS * STREAM_WINDOW)


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _command_line(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""  # gone meanwhile


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(child) for child in task.read_text().split()]
        except OSError:
            continue
    return found


def test_500_concurrent_connections_1mib_each_way_bounded_memory(sandbox) -> None:
    with pod_server(sandbox, ECHO_SERVER, sandbox.service_addr) as port:
        out, err, returncode, peaks = _echo_load(sandbox, port)
    assert returncode == 0, err
    assert out.startswith(f"connections={CONNECTIONS} ok={CONNECTIONS} failed=0 "
                          f"bytes={CONNECTIONS * BYTES_EACH_WAY} "), out
    assert 0 < peaks["supervisor"] < SUPERVISOR_LIMIT, peaks
    assert 0 < peaks["agent"] < AGENT_LIMIT, peaks


def _echo_load(sandbox, port: int) -> tuple[str, str, int, dict[str, int]]:
    """Runs echo-load traced, sampling the supervisor's and the agent's memory meanwhile."""
    argv = [MIRRORD_TRACE, "exec", "--target", f"pid/{sandbox.target_pid}", "--",
            str(example_binary("probe-go")), "echo-load", str(CONNECTIONS), str(BYTES_EACH_WAY),
            f"{sandbox.service_addr}:{port}"]
    supervisor = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
    peaks: dict[str, int] = {"supervisor": 0, "agent": 0}
    deadline = time.monotonic() + 240
    try:
        while supervisor.poll() is None and time.monotonic() < deadline:
            peaks["supervisor"] = max(peaks["supervisor"], _rss(supervisor.pid))
            agents = [child for child in _children(supervisor.pid)
                      if b"agent" in _command_line(child)]
            for agent in agents:
                peaks["agent"] = max(peaks["agent"], _rss(agent))
            time.sleep(0.05)
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
        out, err = supervisor.communicate()
    return out, err, supervisor.returncode, peaks
