"""probe-go's load and measurement subcommands, checked natively against servers on this
machine (they are the instruments of the outgoing tests and benchmarks)."""

from __future__ import annotations

import hashlib
import re
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.conftest import example_binary
from tests.test_outgoing_support import LocalHttpServer, native


@pytest.fixture
def echo_server() -> Iterator[tuple[int, list[str]]]:
    """TCP echo; records the sha256 of what each connection sent."""
    server = socket.create_server(("127.0.0.1", 0), backlog=128)
    digests: list[str] = []

    def handle(connection: socket.socket) -> None:
        digest = hashlib.sha256()
        with connection:
            while data := connection.recv(65536):
                digest.update(data)
                connection.sendall(data)
        digests.append(digest.hexdigest())

    def serve() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(connection,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1], digests
    server.close()


def test_echo_load_checks_every_echo(echo_server) -> None:
    port, digests = echo_server
    out = native([str(example_binary("probe-go")), "echo-load", "20", "100000",
                  f"127.0.0.1:{port}"])
    assert out.returncode == 0, out.stderr
    assert re.fullmatch(r"connections=20 ok=20 failed=0 bytes=2000000 seconds=[0-9.]+\n",
                        out.stdout)
    # The server records a digest when it sees the client's end of stream, which can come just
    # after the client has exited.
    deadline = time.monotonic() + 10
    while len(digests) < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(set(digests)) == 20  # each connection sent its own data


def test_echo_load_notices_a_server_that_does_not_echo() -> None:
    server = socket.create_server(("127.0.0.1", 0))

    def swallow() -> None:
        connection, _ = server.accept()
        with connection:
            while connection.recv(65536):
                pass

    threading.Thread(target=swallow, daemon=True).start()
    out = native([str(example_binary("probe-go")), "echo-load", "1", "1000",
                  f"127.0.0.1:{server.getsockname()[1]}"])
    server.close()
    assert out.returncode != 0
    assert "0 bytes came back" in out.stderr
    assert out.stdout.startswith("connections=1 ok=0 failed=1 ")


def test_fetch_counts_the_body() -> None:
    server = LocalHttpServer("127.0.0.1", "x" * 12345)
    try:
        out = native([str(example_binary("probe-go")), "fetch",
                      f"http://127.0.0.1:{server.port}/"])
    finally:
        server.close()
    assert out.returncode == 0, out.stderr
    assert re.fullmatch(r"bytes=12345 seconds=[0-9.]+\n", out.stdout)


def test_dial_loop_counts_connections_and_reports_refusal() -> None:
    server = socket.create_server(("127.0.0.1", 0), backlog=128)
    accepted = []

    def accept() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            accepted.append(1)
            connection.close()

    threading.Thread(target=accept, daemon=True).start()
    port = server.getsockname()[1]
    out = native([str(example_binary("probe-go")), "dial-loop", "25", f"127.0.0.1:{port}"])
    assert out.returncode == 0, out.stderr
    assert re.fullmatch(r"total=25 seconds=[0-9.]+\n", out.stdout)
    server.shutdown(socket.SHUT_RDWR)  # stops listening at once (and wakes the accept)
    server.close()
    refused = native([str(example_binary("probe-go")), "dial-loop", "1", f"127.0.0.1:{port}"])
    assert refused.returncode != 0 and "refused" in refused.stderr
