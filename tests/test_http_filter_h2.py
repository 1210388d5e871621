"""The filtered steal's HTTP/2 side with real third-party clients and servers on loopback:
curl (prior knowledge and h2c upgrade), nghttp (many streams on one connection), nghttpd as
the program's and the target's HTTP/2 servers, grpcio clients and servers (unary and
bidirectional streaming). The agent's connection handler (agent.http.connection) runs in an
event loop thread exactly as the steal hub runs it, with the program and the target reached
over TCP instead of a stream and the pod's address."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent.http.connection import serve_filtered
from agent.http.filter import parse_filter
from agent.http.relay import Streams
from tests import grpc_echo

pytestmark = pytest.mark.skipif(
    shutil.which("nghttpd") is None or shutil.which("nghttp") is None,
    reason="nghttp2-client/nghttp2-server missing: `make setup` installs them (APT_PACKAGES)",
)


@dataclass
class Proxy:
    """The agent's handler for stolen connections on one filtered port."""

    port: int
    routes: list[list[str]] = field(default_factory=list)

    def finished(self, connections: int) -> list[list[str]]:
        """The routes of the first `connections` connections, once the handler finished them
        (it notices the client's close a moment after the client is done)."""
        deadline = time.monotonic() + 10
        while len(self.routes) < connections and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.routes

    def all_routes(self, connections: int = 1) -> list[str]:
        return [side for routes in self.finished(connections) for side in routes]


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def start_proxy(
    loop: asyncio.AbstractEventLoop, wire: dict[str, Any], program: int | None, target: int
) -> Proxy:
    http_filter = parse_filter(wire)
    proxy = Proxy(0)

    def opener(port: int | None) -> Any:
        async def open_upstream() -> Streams | None:
            if port is None:
                return None  # the program's session is gone
            return await asyncio.open_connection("127.0.0.1", port)

        return open_upstream

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        routes = await serve_filtered(
            (reader, writer), http_filter, opener(program), opener(target)
        )
        proxy.routes.append(routes)

    async def start() -> int:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        return server.sockets[0].getsockname()[1]

    proxy.port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    return proxy


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def nghttpd(tmp_path: Path) -> Iterator[Any]:
    """Start nghttpd (h2c) servers serving a directory each; stopped after the test."""
    started: list[subprocess.Popen[bytes]] = []

    def start(name: str, files: dict[str, bytes] | None = None) -> int:
        root = tmp_path / name
        root.mkdir()
        (root / "who").write_bytes(name.encode())
        for path, content in (files or {}).items():
            (root / path).write_bytes(content)
        port = free_port()
        process = subprocess.Popen(
            ["nghttpd", "--no-tls", "-d", str(root), str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started.append(process)
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return port
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"nghttpd {name} did not listen on {port}")
            time.sleep(0.05)

    yield start
    for process in started:
        process.terminate()
        process.wait(10)


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["curl", "-sS", "-m", "20", *args], capture_output=True, timeout=30)


ME = {"header": "^x-user: me$"}


def test_h2c_prior_knowledge_requests_go_where_the_filter_says(
    loop: asyncio.AbstractEventLoop, nghttpd: Any
) -> None:
    proxy = start_proxy(loop, ME, nghttpd("program"), nghttpd("target"))
    url = f"http://127.0.0.1:{proxy.port}/who"
    matched = curl("--http2-prior-knowledge", "-H", "X-User: me", url)
    other = curl("--http2-prior-knowledge", "-H", "X-User: you", url)
    assert (matched.returncode, matched.stdout) == (0, b"program"), matched.stderr
    assert (other.returncode, other.stdout) == (0, b"target"), other.stderr
    assert proxy.finished(2) == [["program"], ["target"]]


def test_h2c_upgrade_switches_and_routes_the_first_request_and_the_rest(
    loop: asyncio.AbstractEventLoop, nghttpd: Any
) -> None:
    proxy = start_proxy(loop, ME, nghttpd("program"), nghttpd("target"))
    url = f"http://127.0.0.1:{proxy.port}/who"
    # curl --http2 on http:// asks for h2c by Upgrade; the second URL rides the HTTP/2
    # connection the upgrade made.
    both = curl("--http2", "-v", "-H", "X-User: me", url, url)
    assert both.returncode == 0, both.stderr
    assert both.stdout == b"programprogram"
    assert b"101 Switching Protocols" in both.stderr
    assert b"Switching to HTTP/2" in both.stderr
    assert b"HTTP/2 200" in both.stderr
    other = curl("--http2", url)
    assert other.stdout == b"target"


def test_one_http2_connection_with_many_streams_splits_stream_by_stream(
    loop: asyncio.AbstractEventLoop, nghttpd: Any
) -> None:
    """nghttp sends all its URLs as concurrent streams on one connection; the filter is on
    the path, so the streams of one connection go to both servers."""
    files = {"a": b"A" * 10, "b": b"B" * 10}
    proxy = start_proxy(
        loop, {"path": "^/a$"}, nghttpd("program", files), nghttpd("target", files | {"a": b"x"})
    )
    base = f"http://127.0.0.1:{proxy.port}"
    urls = [f"{base}/{name}?{n}" for n in range(4) for name in "ab"]  # nghttp drops repeats
    done = subprocess.run(["nghttp", "-n", "-s", *urls], capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    statuses = [
        line.split()[4]
        for line in done.stdout.decode().splitlines()
        if "/a" in line or "/b" in line
    ]
    assert statuses == ["200"] * 8
    assert len(proxy.finished(1)) == 1  # one connection
    assert sorted(proxy.routes[0]) == ["program"] * 4 + ["target"] * 4
    fetched_a = curl("--http2-prior-knowledge", f"{base}/a")
    assert fetched_a.stdout == b"A" * 10  # the program's /a, not the target's


def test_large_http2_responses_and_uploads_pass_with_flow_control(
    loop: asyncio.AbstractEventLoop, nghttpd: Any, tmp_path: Path
) -> None:
    big = bytes(range(256)) * 40_000  # 10 MB: far past every HTTP/2 window
    proxy = start_proxy(loop, ME, nghttpd("program", {"big": big}), nghttpd("target", {"big": big}))
    url = f"http://127.0.0.1:{proxy.port}/big"
    fetched = curl("--http2-prior-knowledge", "-H", "X-User: me", url)
    assert fetched.returncode == 0 and fetched.stdout == big, fetched.stderr
    upload = tmp_path / "upload"
    upload.write_bytes(big)
    posted = curl("--http2-prior-knowledge", "--data-binary", f"@{upload}", url)
    assert posted.returncode == 0 and posted.stdout == big, posted.stderr
    assert proxy.all_routes(2) == ["program", "target"]


def test_a_program_that_is_not_listening_gets_a_502_never_a_hang(
    loop: asyncio.AbstractEventLoop, nghttpd: Any
) -> None:
    """The program's stream opens but the local side finds nothing listening and closes it:
    a TCP server that accepts and closes at once stands in for that local side."""
    closing = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def accept_and_close() -> None:
        closing.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = closing.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # the test closed the socket
            connection.close()

    threading.Thread(target=accept_and_close, daemon=True).start()
    try:
        proxy = start_proxy(loop, ME, closing.getsockname()[1], nghttpd("target"))
        url = f"http://127.0.0.1:{proxy.port}/who"
        h2 = curl("--http2-prior-knowledge", "-w", "%{http_code}", "-H", "X-User: me", url)
        assert h2.stdout.endswith(b"502"), h2
        h1 = curl("-w", "%{http_code}", "-H", "X-User: me", url)
        assert h1.stdout.endswith(b"502"), h1
        unmatched = curl("--http2-prior-knowledge", url)
        assert unmatched.stdout == b"target"
    finally:
        stop.set()
        closing.close()


def test_when_the_programs_session_is_gone_matching_streams_go_to_the_target(
    loop: asyncio.AbstractEventLoop, nghttpd: Any
) -> None:
    proxy = start_proxy(loop, ME, None, nghttpd("target"))
    answer = curl(
        "--http2-prior-knowledge", "-H", "X-User: me", f"http://127.0.0.1:{proxy.port}/who"
    )
    assert answer.stdout == b"target"


# ---- gRPC ----------------------------------------------------------------------------------


@pytest.fixture
def grpc_servers(tmp_path: Path) -> Iterator[tuple[int, int]]:
    build = tmp_path / "grpc-build"
    program, program_port = grpc_echo.serve(build, "program")
    target, target_port = grpc_echo.serve(build, "target")
    yield program_port, target_port
    program.stop(0)
    target.stop(0)


def test_grpc_unary_and_streaming_calls_are_routed_by_method_path(
    loop: asyncio.AbstractEventLoop, grpc_servers: tuple[int, int], tmp_path: Path
) -> None:
    pb2, pb2_grpc = grpc_echo.stubs(tmp_path / "grpc-build")
    proxy = start_proxy(loop, {"path": "^/mirrordtrace.echo.Echo/Chat$"}, *grpc_servers)
    with grpc.insecure_channel(f"127.0.0.1:{proxy.port}") as channel:
        stub = pb2_grpc.EchoStub(channel)
        said = [stub.Say(pb2.Message(text=f"hi{n}"), timeout=20).text for n in range(3)]
        chat = stub.Chat(iter([pb2.Message(text=t) for t in ("one", "two", "three")]), timeout=20)
        chatted = [message.text for message in chat]
    assert said == ["target:hi0", "target:hi1", "target:hi2"]
    assert chatted == ["program:one", "program:two", "program:three"]
    assert proxy.all_routes() == ["target"] * 3 + ["program"]  # one channel, one connection


def test_grpc_by_metadata_header_with_a_live_bidirectional_stream(
    loop: asyncio.AbstractEventLoop, grpc_servers: tuple[int, int], tmp_path: Path
) -> None:
    """Each answer arrives before the next request is sent: the stream really streams."""
    pb2, pb2_grpc = grpc_echo.stubs(tmp_path / "grpc-build")
    proxy = start_proxy(loop, {"header": "^baggage: .*mirrord-session=alice"}, *grpc_servers)
    outgoing: list[Any] = []
    ready = threading.Event()

    def requests() -> Iterator[Any]:
        for text in ("a", "b", "c"):
            yield pb2.Message(text=text)
            ready.wait(10)
            ready.clear()

    with grpc.insecure_channel(f"127.0.0.1:{proxy.port}") as channel:
        stub = pb2_grpc.EchoStub(channel)
        metadata = [("baggage", "userId=7,mirrord-session=alice")]
        for answer in stub.Chat(requests(), metadata=metadata, timeout=20):
            outgoing.append(answer.text)
            ready.set()
        plain = stub.Say(pb2.Message(text="x"), timeout=20).text
    assert outgoing == ["program:a", "program:b", "program:c"]
    assert plain == "target:x"


def test_a_body_filter_never_stalls_a_streaming_call(
    loop: asyncio.AbstractEventLoop,
    grpc_servers: tuple[int, int],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bidirectional call waits for each answer before it sends more: its body never ends
    while the filter waits. After the body timeout the stream is decided without its body
    (a protobuf body is no JSON: the target's)."""
    from agent.http import body

    monkeypatch.setattr(body, "MAX_BODY_BUFFER_TIMEOUT", 0.2)
    pb2, pb2_grpc = grpc_echo.stubs(tmp_path / "grpc-build")
    wire = {"body": "json", "query": "$.user", "matches": "^alice$"}
    proxy = start_proxy(loop, wire, *grpc_servers)
    ready = threading.Event()

    def requests() -> Iterator[Any]:
        for text in ("a", "b"):
            yield pb2.Message(text=text)
            ready.wait(20)
            ready.clear()

    with grpc.insecure_channel(f"127.0.0.1:{proxy.port}") as channel:
        answers = []
        for answer in pb2_grpc.EchoStub(channel).Chat(requests(), timeout=30):
            answers.append(answer.text)
            ready.set()
    assert answers == ["target:a", "target:b"]
