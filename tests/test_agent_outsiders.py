"""Strangers and the agent (issue #20, item 2): another local user cannot reach a local agent
at all, and whoever reaches an agent's listener without the token cannot make it hold memory.

The stranger is a real process running as `nobody` (uid 65534) that opens hundreds of
connections and starts a frame of almost MAX_FRAME_SIZE on each. The agent's peak RSS
(VmHWM) is compared with its RSS before the flood; its session must still work afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from agent.server import MAX_PENDING_HANDSHAKES
from mirrord_trace.agent_client import AgentClient
from mirrord_trace.local_target import TOKEN_ENV, LocalAgent
from mirrord_trace.protocol import MAX_FRAME_SIZE, new_token
from mirrord_trace.protocol.flow import MAX_DATA_CHUNK
from mirrord_trace.protocol.handshake import PREAUTH_LIMIT
from tests.test_agent_support import Target, running_target

NOBODY = 65534
CONNECTIONS = 300
MiB = 1024 * 1024
# What strangers may add to the agent's memory: each pending handshake holds at most the
# pre-auth limit plus one receive (MAX_DATA_CHUNK) before it is dropped, plus the
# interpreter's own slack for that many connection objects.
BOUND = MAX_PENDING_HANDSHAKES * (PREAUTH_LIMIT + MAX_DATA_CHUNK) + 8 * MiB

_FLOOD = r"""
import json, os, socket, struct, sys, time
unix_paths, ports, connections, frame = json.loads(sys.argv[1])
header = struct.pack(">I", frame)
chunk = b"x" * (1024 * 1024)
opened, refused, sent = [], [], 0
for kind, where in [("unix", p) for p in unix_paths] + [("tcp", p) for p in ports]:
    for _ in range(connections):
        try:
            if kind == "unix":
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(1)
                sock.connect(where)
            else:
                sock = socket.create_connection(("127.0.0.1", where), timeout=1)
            sock.settimeout(0.2)
            sock.sendall(header)
            # One byte short of the announced frame: an agent waiting for the whole frame
            # would hold all of it.
            for piece in range(frame // len(chunk)):
                sent += sock.send(chunk if piece else chunk[1:])
        except OSError as error:
            refused.append(error.errno)
            continue
        opened.append(sock)
print(json.dumps({"opened": len(opened), "refused": refused[:5], "sent": sent}), flush=True)
sys.stdin.read()  # hold every connection until told to stop
"""


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of `pid`, in bytes."""
    found = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0]) * 1024
    return found


def tcp_listening_ports(pid: int) -> list[int]:
    """The TCP ports `pid` listens on in this (the host's) network namespace."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[len("socket:[") : -1])
    ports = []
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                    ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def flood_as_nobody(unix_paths: list[str], ports: list[int]) -> tuple[subprocess.Popen, dict]:
    """Start the flood; returns the flooder (holding its connections) and what it achieved."""
    arguments = json.dumps([unix_paths, ports, CONNECTIONS, MAX_FRAME_SIZE])
    flooder = subprocess.Popen(
        # The system interpreter: the venv's may live where nobody cannot read.
        ["/usr/bin/python3", "-c", _FLOOD, arguments],
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd="/",
        env={"PATH": "/usr/bin:/bin"},
    )
    assert flooder.stdout is not None
    report = json.loads(flooder.stdout.readline())
    return flooder, report


def end(flooder: subprocess.Popen) -> None:
    assert flooder.stdin is not None
    flooder.stdin.close()
    flooder.wait(timeout=10)


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    with running_target() as running:
        yield running


def test_another_user_cannot_reach_a_local_agent(target: Target) -> None:
    with LocalAgent(target.pid) as client:
        agent = client.session_info["agent_pid"]
        assert tcp_listening_ports(agent) == []
        socket_path = client_socket_path(target, agent)
        before = memory(agent)["VmRSS"]
        flooder, report = flood_as_nobody([socket_path], [])
        try:
            assert report["opened"] == 0
            assert set(report["refused"]) == {13}  # EACCES: the directory is the user's own
            assert client.request("env")["env"]["GREETING"] == "hello from the target"
        finally:
            end(flooder)
        assert memory(agent)["VmHWM"] - before < BOUND


def test_a_local_agents_socket_goes_with_it_when_its_session_died_first(target: Target) -> None:
    """The supervisor died (nothing stopped the agent): the agent idles out and removes its
    socket and the private directory around it."""
    local = LocalAgent(target.pid, idle_ttl=0.5)
    client = local.__enter__()
    try:
        assert local.socket_path is not None and local.process is not None
        directory = os.path.dirname(local.socket_path)
        client.close()  # as when the supervisor is gone: the session ends, the agent stays
        local.process.wait(timeout=30)
        assert not os.path.exists(directory)
    finally:
        local.__exit__(None, None, None)


def client_socket_path(target: Target, agent_pid: int) -> str:
    """The agent's Unix socket, as a stranger could find it (in the agent's command line)."""
    with open(f"/proc/{agent_pid}/cmdline", "rb") as cmdline:
        argv = cmdline.read().split(b"\0")
    listen = argv[argv.index(b"--listen") + 1].decode()
    assert listen.startswith("unix:")
    return listen[len("unix:") :]


@pytest.fixture
def tcp_agent(target: Target) -> Iterator[tuple[int, int, str]]:
    """An agent listening on 127.0.0.1 as in a Kubernetes pod: (pid, port, token)."""
    token = new_token()
    agent = subprocess.Popen(
        [sys.executable, "-m", "agent", "--target-pid", str(target.pid), "--listen",
         "127.0.0.1:0", "--idle-ttl", "60"],
        env={**os.environ, TOKEN_ENV: token},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert agent.stdout is not None
        port = json.loads(agent.stdout.readline())["port"]
        yield agent.pid, port, token
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=10)


def test_strangers_on_a_tcp_listener_cannot_inflate_the_agent(
    tcp_agent: tuple[int, int, str],
) -> None:
    pid, port, token = tcp_agent
    with AgentClient.connect("127.0.0.1", port, token) as live:
        assert live.request("noop") == {}
        before = memory(pid)["VmRSS"]
        flooder, report = flood_as_nobody([], [port])
        try:
            time.sleep(3.0)  # let the agent read what it was sent (the old one: ~1 GiB)
            peak = memory(pid)["VmHWM"]
            # The live session is still served, and a new one can be opened.
            assert live.request("env")["env"]["GREETING"] == "hello from the target"
        finally:
            end(flooder)
        with AgentClient.connect("127.0.0.1", port, token) as fresh:
            assert fresh.request("noop") == {}
    assert report["opened"] > 0  # the stranger did reach the listener
    print(f"agent peak growth under the flood: {(peak - before) / MiB:.1f} MiB")
    assert peak - before < BOUND, f"{(peak - before) / MiB:.1f} MiB for {report}"
