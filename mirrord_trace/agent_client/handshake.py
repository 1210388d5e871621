"""Opening a session: the connection to the agent and the hello exchange."""

from __future__ import annotations

import socket
import time
from typing import Any

from mirrord_trace.agent_client.errors import AgentConnectError, HandshakeRejected
from mirrord_trace.protocol import (
    PROTOCOL_VERSION,
    Hello,
    HelloOk,
    HelloRejected,
    Message,
    MessageDecoder,
    ProtocolError,
    ProtocolViolation,
    encode,
)

# The I/O thread receives into one buffer of this size (AgentClient.receive_buffer), never
# with recv(n): for n >= 128 KiB, CPython's recv mallocs n bytes, which glibc serves with
# mmap + mremap + munmap -- ~17 us per call whatever arrived, more than relaying a small
# request costs.
RECEIVE_SIZE = 256 * 1024


def connect_socket(host: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to the agent; AgentConnectError saying why there is none."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as error:
        reason = error.strerror or str(error) or type(error).__name__
        raise AgentConnectError(f"cannot reach the agent at {host}:{port}: {reason}") from None
    return sock


def connect_unix_socket(path: str, timeout: float) -> socket.socket:
    """A connection to a local agent's Unix socket; AgentConnectError saying why there is none."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
    except OSError as error:
        sock.close()
        reason = error.strerror or str(error) or type(error).__name__
        raise AgentConnectError(f"cannot reach the agent at {path}: {reason}") from None
    return sock


def hello(
    sock: socket.socket, token: str, where: str, timeout: float
) -> tuple[MessageDecoder, dict[str, Any]]:
    """Say hello over `sock`: the decoder (it may hold what the agent sent after its answer)
    and the session's info; AgentConnectError (HandshakeRejected), with `sock` closed, when
    the agent refuses or answers something else."""
    try:
        sock.settimeout(timeout)
        sock.sendall(encode(Hello(PROTOCOL_VERSION, token)))
        decoder = MessageDecoder()
        answer = read_hello_answer(sock, decoder, time.monotonic() + timeout)
    except AgentConnectError:
        sock.close()
        raise
    except (OSError, ProtocolError) as error:
        sock.close()
        raise AgentConnectError(f"handshake with the agent at {where} failed: {error}") from None
    if isinstance(answer, HelloRejected):
        sock.close()
        raise HandshakeRejected(answer.reason, answer.message)
    if not isinstance(answer, HelloOk):
        sock.close()
        detail = answer.message if isinstance(answer, ProtocolViolation) else answer
        raise AgentConnectError(f"the agent at {where} answered the handshake with {detail}")
    return decoder, answer.session


def read_hello_answer(sock: socket.socket, decoder: MessageDecoder, deadline: float) -> Message:
    while True:
        try:
            return next(decoder)
        except StopIteration:
            pass
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        data = sock.recv(RECEIVE_SIZE)
        if not data:
            raise AgentConnectError("the agent closed the connection during the handshake")
        decoder.feed(data)
