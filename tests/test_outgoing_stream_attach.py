"""AgentClient.start_stream / attach_stream / drop_stream against a real agent.

The outgoing relay asks the agent to connect first and gives the stream its local end (the
relay's side of the program's connection) only once the program's socket is connected to the
relay; what the remote peer sends in between must be held, not lost.
"""

from __future__ import annotations

import errno
import os
import socket
import threading
from collections.abc import Iterator

import pytest

from mirrord_trace.agent_client import AgentClient, RemoteError
from mirrord_trace.local_target import LocalAgent

GREETING = b"220 hello before anything was attached\r\n"


@pytest.fixture(scope="module")
def client() -> Iterator[AgentClient]:
    with LocalAgent(os.getpid()) as agent_client:
        yield agent_client


@pytest.fixture
def greeting_echo_server() -> Iterator[tuple[socket.socket, list[bytes]]]:
    """Greets, then echoes; records what each connection sent before it closed."""
    server = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            with connection:
                connection.sendall(GREETING)
                seen = b""
                while data := _recv(connection):
                    seen += data
                    connection.sendall(data)
                received.append(seen)

    threading.Thread(target=serve, daemon=True).start()
    yield server, received
    server.close()


def _recv(connection: socket.socket) -> bytes:
    try:
        return connection.recv(65536)
    except ConnectionResetError:
        return b""


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"end of stream after {len(data)} of {size} bytes"
        data += chunk
    return data


def test_data_sent_before_attach_is_held_then_delivered(client, greeting_echo_server) -> None:
    server, received = greeting_echo_server
    host, port = server.getsockname()
    stream_id, reply = client.start_stream(family=socket.AF_INET, host=host, port=port)
    info = reply.result(10)
    assert info["peer"] == [host, port]
    ours, program_end = socket.socketpair()
    finished = threading.Event()
    sent_all = client.attach_stream(stream_id, ours, on_finished=finished.set)
    program_end.settimeout(10)
    assert _read_exactly(program_end, len(GREETING)) == GREETING
    payload = os.urandom(300_000)  # more than one stream window
    writer = threading.Thread(target=program_end.sendall, args=(payload,))
    writer.start()
    assert _read_exactly(program_end, len(payload)) == payload
    writer.join()
    program_end.shutdown(socket.SHUT_WR)
    assert sent_all.wait(10)
    assert program_end.recv(1) == b""  # the server closed after our end of file
    assert finished.wait(10)
    program_end.close()
    assert received[-1] == payload


def test_refused_connection_reports_the_errno(client) -> None:
    unused = socket.socket()
    unused.bind(("127.0.0.1", 0))  # bound, never listening: connecting is refused
    port = unused.getsockname()[1]
    _, reply = client.start_stream(family=socket.AF_INET, host="127.0.0.1", port=port)
    with pytest.raises(RemoteError) as failure:
        reply.result(10)
    assert failure.value.errno == errno.ECONNREFUSED
    unused.close()


def test_dropped_stream_closes_the_remote_connection(client, greeting_echo_server) -> None:
    server, received = greeting_echo_server
    host, port = server.getsockname()
    before = len(received)
    stream_id, reply = client.start_stream(family=socket.AF_INET, host=host, port=port)
    reply.result(10)
    client.drop_stream(stream_id)
    deadline = threading.Event()
    for _ in range(100):
        if len(received) > before:
            break
        deadline.wait(0.05)
    assert len(received) == before + 1 and received[-1] == b""


def test_attach_after_the_agent_ended_the_stream_closes_the_local_end(client) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    host, port = server.getsockname()
    stream_id, reply = client.start_stream(family=socket.AF_INET, host=host, port=port)
    reply.result(10)
    connection, _ = server.accept()
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
    connection.close()  # RST: the agent resets the stream
    server.close()
    threading.Event().wait(0.3)
    ours, program_end = socket.socketpair()
    finished = threading.Event()
    client.attach_stream(stream_id, ours, on_finished=finished.set)
    assert finished.wait(10)
    program_end.settimeout(10)
    assert program_end.recv(10) == b""
    program_end.close()
