"""The agent's handshake, its resilience to garbage, its lifetime, and how failures read."""

from __future__ import annotations

import errno
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import msgpack
import pytest

from mirrord_trace.agent_client import AgentClient, AgentLost, HandshakeRejected, RemoteError
from mirrord_trace.local_target import LocalAgent, TargetError
from mirrord_trace.protocol import (
    MAX_FRAME_SIZE,
    MESSAGE_TYPES,
    PROTOCOL_VERSION,
    ErrorReply,
    Hello,
    HelloOk,
    HelloRejected,
    Message,
    MessageDecoder,
    ProtocolViolation,
    Reply,
    Request,
    StreamCredit,
    StreamData,
    encode,
    encode_frame,
)
from tests.test_agent_support import Target, running_target


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    with running_target() as running:
        yield running


@pytest.fixture
def agent(target: Target) -> Iterator[LocalAgent]:
    local_agent = LocalAgent(target.pid)
    with local_agent:
        yield local_agent


class RawConnection:
    """A hand-driven connection, to send the agent exactly what a test wants."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(path)
        self.decoder = MessageDecoder()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def next_message(self) -> Message | None:
        """The next message, or None once the agent has closed the connection."""
        while True:
            try:
                return next(self.decoder)
            except StopIteration:
                pass
            try:
                data = self.sock.recv(1 << 16)
            except ConnectionResetError:
                return None
            if not data:
                return None
            self.decoder.feed(data)

    def close(self) -> None:
        self.sock.close()


def agent_log(agent: LocalAgent, needle: str, timeout: float = 5.0) -> str:
    """The agent's stderr line containing `needle` (waits a little for it to arrive)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in agent.stderr_lines():
            if needle in line:
                return line
        time.sleep(0.05)
    raise AssertionError(f"the agent never printed {needle!r}; it printed {agent.stderr_lines()}")


def test_a_wrong_token_is_refused_clearly_on_both_sides(agent: LocalAgent) -> None:
    assert agent.socket_path is not None
    with pytest.raises(HandshakeRejected) as caught:
        agent.connect("0" * 64)
    assert caught.value.reason == "bad-token"
    assert "token" in str(caught.value)
    assert "bad-token" in agent_log(agent, "rejected client")


def test_a_wrong_version_is_refused_clearly_on_both_sides(agent: LocalAgent) -> None:
    assert agent.socket_path is not None
    raw = RawConnection(agent.socket_path)
    raw.send(encode(Hello(PROTOCOL_VERSION + 41, agent.token)))
    answer = raw.next_message()
    assert isinstance(answer, HelloRejected) and answer.reason == "bad-version"
    assert str(PROTOCOL_VERSION + 41) in answer.message
    assert raw.next_message() is None  # and the agent hangs up
    raw.close()
    assert "bad-version" in agent_log(agent, "rejected client")


def test_garbage_before_the_handshake_is_dropped(agent: LocalAgent) -> None:
    assert agent.socket_path is not None
    raw = RawConnection(agent.socket_path)
    raw.send(encode(Request(1, "env", {})))
    answer = raw.next_message()
    assert isinstance(answer, ProtocolViolation) and "Hello" in answer.message
    assert raw.next_message() is None
    raw.close()


def _malformed_frame(rng: random.Random) -> bytes:
    """One frame the agent must reject without ending the session."""
    choice = rng.randrange(8)
    if choice == 0:  # not msgpack at all, or truncated msgpack
        return encode_frame(rng.randbytes(rng.randrange(0, 64)))
    if choice == 1:  # msgpack, but not a message
        value = rng.choice([None, 3, "text", {"a": 1}, [], [b"x"], 1.5, [None, 1]])
        return encode_frame(msgpack.packb(value))
    if choice == 2:  # unknown message kind
        return encode_frame(msgpack.packb([rng.randrange(100, 10_000), 1, 2]))
    if choice == 3:  # known kind, wrong arity or field types
        cls = rng.choice(MESSAGE_TYPES)
        fields = [rng.choice([-1, "s", b"b", None, [1], 2**70 - 1 >> 7, True])]
        return encode_frame(msgpack.packb([cls.TAG, *fields * rng.randrange(0, 5)]))
    if choice == 4:  # a valid Request of an unknown kind or with bad fields
        kind = rng.choice(["fs.nothing", "fs.stat", "net.connect", "fs.read", "x" * 300])
        fields = rng.choice([{}, {"path": 7}, {"handle": "h"}, {"stream": 2, "family": 99}])
        return encode(Request(rng.randrange(1, 2**32), kind, fields))
    if choice == 5:  # stream traffic for streams that do not exist
        stream = rng.randrange(0, 2**40)
        return encode(rng.choice([StreamData(stream, b"zz"), StreamCredit(stream, 5)]))
    if choice == 6:  # messages only an agent sends
        return encode(rng.choice([Reply(1, {}), HelloOk(1, {}), ErrorReply(1, 2, "x")]))
    return encode(Hello(PROTOCOL_VERSION, "again"))  # a second handshake


def test_ten_thousand_malformed_frames_leave_the_agent_serving(agent: LocalAgent) -> None:
    assert agent.socket_path is not None
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    frames_per_connection = 1000
    for connection in range(10):
        raw = RawConnection(agent.socket_path)
        raw.send(encode(Hello(PROTOCOL_VERSION, agent.token)))
        assert isinstance(raw.next_message(), HelloOk)
        burst = b"".join(_malformed_frame(rng) for _ in range(frames_per_connection))
        sender = threading.Thread(target=raw.send, args=(burst,))
        sender.start()
        sender.join()
        # A request after the burst is answered: the session survived every frame.
        raw.send(encode(Request(987_654_321, "noop", {})))
        while True:
            message = raw.next_message()
            assert message is not None, f"agent closed connection {connection} (seed {seed})"
            if isinstance(message, Reply) and message.id == 987_654_321:
                break
        if connection % 3 == 0:
            # A broken byte stream (an impossible length) is the one thing that ends a session.
            raw.send(struct.pack(">I", MAX_FRAME_SIZE + 1) + b"junk")
            while (message := raw.next_message()) is not None:
                assert isinstance(message, ProtocolViolation | ErrorReply | Reply)
        raw.close()
    assert agent.process is not None and agent.process.poll() is None
    with agent.connect() as fresh:
        assert fresh.request("env")["env"]["GREETING"] == "hello from the target"
        assert fresh.request("noop") == {}


def test_killing_the_agent_fails_the_next_request_within_a_second(agent: LocalAgent) -> None:
    client, process = agent.client, agent.process
    assert client is not None and process is not None
    losses: list[AgentLost] = []
    client.on_lost = losses.append
    assert client.request("noop") == {}
    process.kill()
    started = time.monotonic()
    with pytest.raises(AgentLost) as caught:
        while time.monotonic() - started < 5:
            client.request("noop", timeout=5)
    assert time.monotonic() - started < 1.0
    assert caught.value.errno in (errno.ECONNRESET, errno.EIO)
    assert len(losses) == 1


def test_a_request_in_flight_fails_when_the_agent_dies(agent: LocalAgent, target: Target) -> None:
    client, process = agent.client, agent.process
    assert client is not None and process is not None
    # A UDP query to a port that never answers waits for its timeout on the agent side.
    pending = client.request_async(
        "dns.query",
        payload=bytes(12),
        nameserver="127.0.0.1",
        port=target.ports["udp_blackhole"],
        timeout=30.0,
    )
    time.sleep(0.2)
    process.kill()
    started = time.monotonic()
    with pytest.raises(AgentLost):
        pending.result(timeout=5)
    assert time.monotonic() - started < 1.0


def test_sigterm_stops_the_agent_and_the_client_notices(agent: LocalAgent) -> None:
    client, process = agent.client, agent.process
    assert client is not None and process is not None
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=5) == 0
    with pytest.raises(AgentLost):
        client.request("noop", timeout=5)


def _start_agent(pid: int, *options: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "agent", "--target-pid", str(pid), *options],
        env={**os.environ, "MIRRORD_TRACE_AGENT_TOKEN": "t" * 32} if env is None else env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_the_agent_exits_after_the_idle_ttl_without_clients(target: Target) -> None:
    process = _start_agent(target.pid, "--idle-ttl", "1")
    try:
        started = time.monotonic()
        out, err = process.communicate(timeout=15)
        assert process.returncode == 0
        assert time.monotonic() - started >= 1.0
        assert '"port"' in out
        assert "no client for 1 s" in err
    finally:
        process.kill()
        process.wait()


def test_the_idle_ttl_waits_while_a_client_is_connected(target: Target) -> None:
    local_agent = LocalAgent(target.pid, idle_ttl=1.0)
    with local_agent as client:
        time.sleep(2.0)
        assert client.request("noop") == {}
        process = local_agent.process
        assert process is not None
        client.close()
        assert process.wait(timeout=10) == 0


def test_the_agent_refuses_to_run_without_root(target: Target) -> None:
    process = subprocess.Popen(
        [
            *("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"),
            *(sys.executable, "-m", "agent", "--target-pid", str(target.pid)),
        ],
        env={**os.environ, "MIRRORD_TRACE_AGENT_TOKEN": "t" * 32},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = process.communicate(timeout=30)
    assert process.returncode != 0
    assert out == ""
    assert err.count("\n") == 1 and "root" in err and "CAP_SYS_ADMIN" in err


def test_the_agent_needs_a_token(target: Target) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MIRRORD_TRACE_AGENT_TOKEN"}
    process = _start_agent(target.pid, env=env)
    _, err = process.communicate(timeout=30)
    assert process.returncode != 0
    assert "MIRRORD_TRACE_AGENT_TOKEN" in err and err.count("\n") == 1


def test_a_missing_target_is_a_clear_error() -> None:
    missing = 2**22 + 17  # above the kernel's pid_max default ceiling region in use here
    while os.path.exists(f"/proc/{missing}"):
        missing += 1
    with pytest.raises(TargetError, match=f"no process with pid {missing}"):
        LocalAgent(missing).__enter__()


def test_an_agent_that_fails_to_start_is_explained(target: Target) -> None:
    with pytest.raises(TargetError) as caught:
        LocalAgent(target.pid, idle_ttl=-1).__enter__()
    message = str(caught.value)
    assert "failed to start" in message and "idle-ttl" in message


def test_pings_keep_an_idle_session_alive(agent: LocalAgent) -> None:
    assert agent.socket_path is not None
    with AgentClient.connect_unix(
        agent.socket_path, agent.token, keepalive_interval=0.2, silence_timeout=1.0
    ) as idle:
        time.sleep(2.5)  # idle for more than twice the silence timeout
        assert not idle.lost
        assert idle.request("noop") == {}


def test_a_frozen_agent_counts_as_lost_after_the_silence_timeout(agent: LocalAgent) -> None:
    assert agent.socket_path is not None and agent.process is not None
    with AgentClient.connect_unix(
        agent.socket_path, agent.token, keepalive_interval=0.2, silence_timeout=1.0
    ) as watched:
        losses: list[AgentLost] = []
        watched.on_lost = losses.append
        pending = watched.request_async("noop")
        pending.result(timeout=5)
        agent.process.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(AgentLost) as caught:
                watched.request("noop", timeout=10)
            assert time.monotonic() - started < 3.0
        finally:
            agent.process.send_signal(signal.SIGCONT)
    assert caught.value.errno == errno.ETIMEDOUT
    assert "no word from the agent" in str(caught.value)
    assert len(losses) == 1


def test_a_target_that_exits_is_reported_as_gone() -> None:
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        with LocalAgent(sleeper.pid) as client:
            assert "env" in client.request("env")
            sleeper.kill()
            sleeper.wait()
            with pytest.raises(RemoteError) as caught:
                client.request("env")
            assert caught.value.errno == errno.ESRCH
            assert f"target process {sleeper.pid} has exited" in str(caught.value)
            assert client.request("noop") == {}  # the session itself carries on
    finally:
        sleeper.kill()
        sleeper.wait()
