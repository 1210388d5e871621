"""`dump -p PORT`: the traffic arriving at a target's port is printed in mirrord's format while
the target still answers (a copy). The target is a real server in its own network namespace;
its client runs in that namespace too."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import IO

import pytest

SERVER = """
import socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 7002)); s.listen(8)
print("ready", flush=True)
def serve(c):
    with c:
        while data := c.recv(65536):
            c.sendall(b"ok:" + data)
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
"""
CLIENT = """
import socket, time
c = socket.create_connection(("127.0.0.1", 7002))
c.sendall(b"hello dump\\n"); print(c.recv(100).decode(), flush=True)
time.sleep(0.3)
c.sendall(bytes([255, 0, 1])); print(c.recv(100).hex(), flush=True)
c.close()
"""


@pytest.fixture
def isolated_server() -> Iterator[int]:
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


def read_until(stream: IO[str], wanted: str, timeout: float = 20) -> str:
    """The dump's output until a line containing `wanted` (read by a thread: readline blocks)."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in stream], daemon=True).start()
    seen = ""
    deadline = time.monotonic() + timeout
    while wanted not in seen:
        try:
            seen += lines.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no {wanted!r} in the dump: {seen!r}") from None
    return seen


def test_dump_prints_the_traffic_and_the_target_still_answers(isolated_server: int) -> None:
    dump = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mirrord_trace",
            "dump",
            "-t",
            f"pid/{isolated_server}",
            "-p",
            "7002",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert dump.stderr is not None and dump.stdout is not None
        assert dump.stderr.readline() == (
            f"mirrord-trace: dumping port 7002 of pid/{isolated_server}\n"
        )
        client = subprocess.run(
            ["nsenter", "-t", str(isolated_server), "-n", sys.executable, "-c", CLIENT],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        assert client.stdout == "ok:hello dump\n\n6f6b3aff0001\n"  # the target answered
        text = read_until(dump.stdout, "closed")
    finally:
        dump.send_signal(signal.SIGINT)
        status = dump.wait(timeout=30)
    assert status == 0
    lines = text.splitlines()
    assert lines[0].startswith("## New connection ") and lines[0].endswith(" -> port 7002")
    stream = lines[0].split()[3].rstrip(":")
    assert f"## Connection ID {stream}: 11 bytes" in lines
    assert lines[lines.index(f"## Connection ID {stream}: 11 bytes") + 1 :][:2] == [
        "Data:",
        "hello dump",
    ]
    assert f"## Connection ID {stream}: 3 bytes" in lines
    assert "ff0001" in lines
    assert lines[-1] == f"## Connection ID {stream} closed"
