"""`port-forward -L [LOCAL_PORT:]HOST:PORT`: connections to the local port are made from the
target (here a real process in its own network namespace, whose loopback server the host
cannot reach), many at once; HOST is resolved as the target resolves it."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mirrord_trace.port_forward import Mapping, parse_mapping

SERVER = """
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 7001)); s.listen(64)
print("ready", flush=True)
def serve(c):
    with c:
        while data := c.recv(65536):
            c.sendall(data.upper())
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def isolated_server() -> Iterator[int]:
    """A server on 127.0.0.1:7001 inside a new network namespace: only reachable from it."""
    if os.geteuid() != 0:
        pytest.skip("needs root for a network namespace (CAP_SYS_ADMIN)")
    server = subprocess.Popen(
        ["unshare", "-n", "sh", "-c", f"ip link set lo up && exec {sys.executable} -c '{SERVER}'"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None and server.stdout.readline() == "ready\n"
        yield server.pid
    finally:
        server.kill()
        server.wait()


def test_mapping_forms() -> None:
    assert parse_mapping("db.shop.svc:5432") == Mapping(5432, "db.shop.svc", 5432)
    assert parse_mapping("15432:db:5432") == Mapping(15432, "db", 5432)
    assert parse_mapping("8080:[fd00::1]:80") == Mapping(8080, "fd00::1", 80)
    for bad in ("8080", "a:b:c", "1:2:3:4", "0:x:1", "x:70000", "1:[nothost]:2"):
        with pytest.raises(ValueError):
            parse_mapping(bad)


def test_port_forward_reaches_what_only_the_target_reaches(
    isolated_server: int, tmp_path: Path
) -> None:
    local, refused = free_port(), free_port()
    forward = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mirrord_trace",
            "port-forward",
            "-t",
            f"pid/{isolated_server}",
            "-L",
            f"{local}:localhost:7001",
            "-L",
            f"{refused}:127.0.0.1:7999",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert forward.stderr is not None
        banner = [forward.stderr.readline(), forward.stderr.readline()]
        assert banner[0] == (
            f"mirrord-trace: forwarding 127.0.0.1:{local} -> localhost:7001 "
            f"(from pid/{isolated_server})\n"
        )

        def exchange(index: int) -> bytes:
            with socket.create_connection(("127.0.0.1", local), timeout=20) as connection:
                connection.sendall(b"hello %d" % index)
                connection.shutdown(socket.SHUT_WR)
                answer = b""
                while data := connection.recv(100):
                    answer += data
                return answer

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(exchange, range(48)))
        assert answers == [b"HELLO %d" % index for index in range(48)]

        # Nothing listens on 7999 in the target: that connection is reset, the rest go on.
        with (
            socket.create_connection(("127.0.0.1", refused), timeout=20) as connection,
            pytest.raises(ConnectionResetError),
        ):
            connection.recv(10)
        line = forward.stderr.readline()
        assert line.startswith("mirrord-trace: cannot connect to 127.0.0.1:7999 in the target: ")
        assert line.endswith("(ECONNREFUSED)\n")
        assert exchange(99) == b"HELLO 99"
    finally:
        forward.send_signal(signal.SIGINT)
        status = forward.wait(timeout=30)
    assert status == 0
    time.sleep(0.1)
    with socket.socket() as again:  # the local port is free again
        again.bind(("127.0.0.1", local))
