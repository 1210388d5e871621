"""The filtered steal's HTTP/1.x routing, over real sockets: a client connection is served
request by request by two upstreams (the program: keep-alive; the target: closes after every
response, close-delimited bodies, like busybox httpd), following mirrord's filter rules."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import h11
import pytest

from agent.http.connection import serve_filtered
from agent.http.filter import Filter, parse_filter
from agent.http.h1 import FilteredConnection
from agent.http.relay import Streams
from agent.http.routes import Routes

# ---- the proxy, with real upstream servers ---------------------------------------------------


@dataclass
class Upstream:
    """A little HTTP server; `keep_alive=False` answers like busybox httpd (close-delimited)."""

    name: str
    keep_alive: bool
    upgrades: bool = False
    idle_close: bool = False  # says keep-alive, then closes once the response is out
    requests: list[tuple[bytes, bytes, bytes]] = field(default_factory=list)  # method, target, body
    connections: int = 0
    server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request, body = await _read_message(conn, reader)
                if request is None:
                    return
                self.requests.append((request.method, request.target, body))
                if self.upgrades and any(n == b"upgrade" for n, _ in request.headers):
                    writer.write(conn.send(h11.InformationalResponse(
                        status_code=101, headers=[("upgrade", "echo"), ("connection", "upgrade")]
                    )))  # fmt: skip
                    writer.write(conn.trailing_data[0].upper())
                    while data := await reader.read(4096):
                        writer.write(data.upper())
                    return
                answer = f"{self.name}:{request.target.decode()}:{len(body)}".encode()
                if request.target.startswith(b"/huge"):
                    answer *= 100_000  # megabytes: many reads and writes on each hop
                headers = [("content-length", str(len(answer)))] if self.keep_alive else []
                if not self.keep_alive:
                    headers.append(("connection", "close"))
                writer.write(conn.send(h11.Response(status_code=200, headers=headers)))
                if request.method != b"HEAD":
                    writer.write(conn.send(h11.Data(data=answer)))
                writer.write(conn.send(h11.EndOfMessage()) or b"")
                await writer.drain()
                if self.idle_close:
                    return
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        finally:
            writer.close()


async def _read_message(
    conn: h11.Connection, reader: asyncio.StreamReader
) -> tuple[h11.Request | h11.Response | None, bytes]:
    head, body = None, b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(65536))
        elif isinstance(event, h11.Request | h11.Response):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return head, body
        elif isinstance(event, h11.InformationalResponse):
            continue


def _opener(port: int | None) -> Callable[[], Awaitable[Streams | None]]:
    async def open_upstream() -> Streams | None:
        if port is None:
            return None  # the program's session is gone
        return await asyncio.open_connection("127.0.0.1", port)

    return open_upstream


@dataclass
class Proxy:
    program: Upstream
    target: Upstream
    port: int
    routes: list[list[str]]


async def _proxy(http_filter: Filter, program_available: bool = True) -> Proxy:
    program, target = Upstream("program", keep_alive=True, upgrades=True), Upstream("target", False)
    program_port, target_port = await program.start(), await target.start()
    routes: list[list[str]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = FilteredConnection(
            (reader, writer),
            Routes.single(
                http_filter,
                _opener(program_port if program_available else None),
                _opener(target_port),
            ),
        )
        routes.append(connection.routed)
        await connection.serve()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return Proxy(program, target, server.sockets[0].getsockname()[1], routes)


async def _client_exchange(port: int, raw: bytes, responses: int) -> list[tuple[int, bytes]]:
    """Send raw request bytes on one connection; read `responses` responses in order."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    conn = h11.Connection(h11.CLIENT)
    answers = []
    for _ in range(responses):
        # h11 parses a response only after "its" request: a stand-in (none of these is HEAD).
        conn.send(h11.Request(method="GET", target="/", headers=[("host", "t")]))
        conn.send(h11.EndOfMessage())
        response, body = await _read_message(conn, reader)
        assert isinstance(response, h11.Response)
        answers.append((response.status_code, body))
        conn.start_next_cycle()
    writer.close()
    return answers


ME = parse_filter({"header": "^x-user: me$"})


def test_requests_on_one_keep_alive_connection_go_where_the_filter_says() -> None:
    async def scenario() -> None:
        proxy = await _proxy(ME)
        raw = b"".join(
            b"GET /r%d HTTP/1.1\r\nHost: t\r\n%s\r\n" % (n, b"X-User: me\r\n" if n % 2 else b"")
            for n in range(6)
        )
        answers = await _client_exchange(proxy.port, raw, 6)  # pipelined, even
        assert answers == [
            (200, f"{'program' if n % 2 else 'target'}:/r{n}:0".encode()) for n in range(6)
        ]
        assert proxy.routes == [["target", "program"] * 3]
        assert proxy.program.connections == 1  # kept alive across the program's requests
        assert proxy.target.connections == 3  # reopened after each close-delimited answer

    asyncio.run(scenario())


def test_bodies_chunked_and_expect_continue_reach_the_chosen_upstream() -> None:
    async def scenario() -> None:
        proxy = await _proxy(ME)
        chunked = (
            b"POST /c HTTP/1.1\r\nHost: t\r\nX-User: me\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        answers = await _client_exchange(proxy.port, chunked, 1)
        assert answers == [(200, b"program:/c:11")]
        assert proxy.program.requests == [(b"POST", b"/c", b"hello world")]

        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(
            b"PUT /e HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim.startswith(b"HTTP/1.1 100 ")  # answered before the body was sent
        writer.write(b"body")
        final = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5)
        # The target's close-delimited answer reaches the keep-alive client chunked.
        assert final.startswith(b"HTTP/1.1 200 ") and b"\r\nb\r\ntarget:/e:4\r\n" in final
        assert b"transfer-encoding: chunked" in final.lower()
        writer.close()

    asyncio.run(scenario())


def test_matching_requests_go_to_the_target_when_the_program_is_gone() -> None:
    async def scenario() -> None:
        proxy = await _proxy(ME, program_available=False)
        request = b"GET /x HTTP/1.1\r\nHost: t\r\nX-User: me\r\n\r\n"
        answers = await _client_exchange(proxy.port, request, 1)
        assert answers == [(200, b"target:/x:0")]

    asyncio.run(scenario())


def test_traffic_that_is_not_http_passes_to_the_target_untouched() -> None:
    async def scenario() -> None:
        received = bytearray()

        async def raw_target(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(4096):
                received.extend(data)
            writer.write(b"raw answer")
            writer.close()

        target = await asyncio.start_server(raw_target, "127.0.0.1", 0)
        target_port = target.sockets[0].getsockname()[1]

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await serve_filtered((reader, writer), ME, _opener(None), _opener(target_port))

        proxy = await asyncio.start_server(serve, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", proxy.sockets[0].getsockname()[1]
        )
        payload = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256))
        writer.write(payload)
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 5) == b"raw answer"
        assert bytes(received) == payload

    asyncio.run(scenario())


def test_an_upgrade_switches_to_raw_bytes_with_the_chosen_upstream() -> None:
    async def scenario() -> None:
        proxy = await _proxy(ME)
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(
            b"GET /ws HTTP/1.1\r\nHost: t\r\nX-User: me\r\nConnection: Upgrade\r\n"
            b"Upgrade: echo\r\n\r\nfirst bytes "
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101 ")
        writer.write(b"then more")
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 5) == b"FIRST BYTES THEN MORE"
        assert proxy.routes == [["program"]]

    asyncio.run(scenario())


def test_a_client_that_sends_garbage_mid_connection_is_disconnected() -> None:
    async def scenario() -> None:
        proxy = await _proxy(ME)
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n\x00\x01garbage\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 5)  # ends: no hang
        assert data.startswith(b"HTTP/1.1 200 ") and b"target:/ok:0" in data

    asyncio.run(scenario())


def test_socketpair_upstreams_work_like_tcp_ones() -> None:
    """The program side really is a socket pair bridged to a stream: same behaviour."""

    async def scenario() -> None:
        near, far = socket.socketpair()
        program = Upstream("program", keep_alive=True)
        far_reader, far_writer = await asyncio.open_connection(sock=far)
        serving = asyncio.ensure_future(program._serve(far_reader, far_writer))
        target = Upstream("target", keep_alive=False)
        target_port = await target.start()

        async def open_program() -> Streams:
            return await asyncio.open_connection(sock=near)

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            to_target = _opener(target_port)
            connection = FilteredConnection(
                (reader, writer), Routes.single(ME, open_program, to_target)
            )
            await connection.serve()

        proxy = await asyncio.start_server(serve, "127.0.0.1", 0)
        raw = b"GET /a HTTP/1.1\r\nHost: t\r\nx-user: me\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\n\r\n"
        answers = await _client_exchange(proxy.sockets[0].getsockname()[1], raw, 2)
        assert answers == [(200, b"program:/a:0"), (200, b"target:/b:0")]
        serving.cancel()

    asyncio.run(scenario())


def test_body_filter_routes_pipelined_json_requests_and_streams_a_body_past_its_bound() -> None:
    async def scenario() -> None:
        flt = parse_filter({"body": "json", "query": "$.user", "matches": "^alice$"})
        proxy = await _proxy(flt)
        bodies = [b'{"user": "alice"}', b'{"user": "bob"}', b"not json", b'{"user": "alice"}']
        raw = b"".join(
            b"POST /b%d HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (n, len(body), body)
            for n, body in enumerate(bodies)
        )
        answers = await _client_exchange(proxy.port, raw, 4)
        assert [side for _, side in answers] == [
            b"program:/b0:17",
            b"target:/b1:15",
            b"target:/b2:8",
            b"program:/b3:17",
        ]
        assert proxy.program.requests == [
            (b"POST", b"/b0", bodies[0]),
            (b"POST", b"/b3", bodies[3]),
        ]
        # 1 MB chunked, its JSON would match, but it is past the 64 KiB bound: never buffered
        # whole, it goes to the target byte for byte.
        big = b'{"user": "alice", "pad": "' + b"x" * 1_000_000 + b'"}'
        chunks = b"".join(
            b"%x\r\n%s\r\n" % (len(big[i : i + 30_000]), big[i : i + 30_000])
            for i in range(0, len(big), 30_000)
        )
        chunked = b"POST /big HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        answers = await _client_exchange(proxy.port, chunked + chunks + b"0\r\n\r\n", 1)
        assert answers == [(200, b"target:/big:%d" % len(big))]
        assert proxy.target.requests[-1] == (b"POST", b"/big", big)

    asyncio.run(scenario())


def test_method_filter_with_head_requests_and_expect_continue() -> None:
    async def scenario() -> None:
        proxy = await _proxy(parse_filter({"any_of": [{"method": "HEAD"}, {"method": "PUT"}]}))
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"HEAD /h HTTP/1.1\r\nHost: t\r\n\r\nGET /g HTTP/1.1\r\nHost: t\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        # The length the GET would have ("program:/h:0"), and no body.
        assert head.startswith(b"HTTP/1.1 200 ") and b"content-length: 12" in head.lower()
        get = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)  # no body after HEAD's
        assert get.startswith(b"HTTP/1.1 200 ")
        writer.write(
            b"PUT /e HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        )
        rest = await asyncio.wait_for(reader.readuntil(b"100 Continue\r\n\r\n"), 5)
        assert b"target:/g:0" in rest
        writer.write(b"body")
        final = await asyncio.wait_for(reader.readuntil(b"program:/e:4"), 5)
        assert final.startswith(b"HTTP/1.1 200 ")
        writer.close()
        assert proxy.program.requests[-1] == (b"PUT", b"/e", b"body")
        assert [r[:2] for r in proxy.program.requests] == [(b"HEAD", b"/h"), (b"PUT", b"/e")]

    asyncio.run(scenario())


def test_two_subscribers_with_their_own_filters_share_one_connection() -> None:
    """A port stolen by two sessions, each with its filter: the first that matches wins."""

    async def scenario() -> None:
        alice, bob = Upstream("alice", keep_alive=True), Upstream("bob", keep_alive=True)
        target = Upstream("target", keep_alive=False)
        ports = [await alice.start(), await bob.start(), await target.start()]
        routes = Routes(
            (
                ("alice", parse_filter({"header": "^x-user: alice$"})),
                ("bob", parse_filter({"any_of": [{"header": "^x-user: bob$"}, {"method": "PUT"}]})),
            ),
            {"alice": _opener(ports[0]), "bob": _opener(ports[1]), "target": _opener(ports[2])},
        )

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await FilteredConnection((reader, writer), routes).serve()

        proxy = await asyncio.start_server(serve, "127.0.0.1", 0)
        users = [b"alice", b"bob", b"carol", b"alice"]
        raw = (
            b"".join(
                b"GET /%d HTTP/1.1\r\nHost: t\r\nX-User: %s\r\n\r\n" % (n, user)
                for n, user in enumerate(users)
            )
            + b"PUT /p HTTP/1.1\r\nHost: t\r\nX-User: alice\r\nContent-Length: 0\r\n\r\n"
        )
        answers = await _client_exchange(proxy.sockets[0].getsockname()[1], raw, 5)
        assert [body for _, body in answers] == [
            b"alice:/0:0", b"bob:/1:0", b"target:/2:0", b"alice:/3:0", b"alice:/p:0"
        ]  # fmt: skip

    asyncio.run(scenario())


def test_a_kept_alive_upstream_that_closed_while_idle_gets_the_request_again() -> None:
    async def scenario() -> None:
        program = Upstream("program", keep_alive=True, idle_close=True)
        target = Upstream("target", keep_alive=True)
        routes = Routes.single(ME, _opener(await program.start()), _opener(await target.start()))

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await FilteredConnection((reader, writer), routes).serve()

        proxy = await asyncio.start_server(serve, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", proxy.sockets[0].getsockname()[1]
        )
        answers = []
        for n in range(3):
            writer.write(b"GET /i%d HTTP/1.1\r\nHost: t\r\nX-User: me\r\n\r\n" % n)
            answers.append(await asyncio.wait_for(reader.readuntil(b"program:/i%d:0" % n), 5))
        # Each answer was the program's, on a new program connection every time (without the
        # second attempt, the 2nd and 3rd requests would have been answered 502).
        assert all(answer.startswith(b"HTTP/1.1 200 ") for answer in answers)
        assert program.connections == 3
        writer.close()

    asyncio.run(scenario())


def test_large_answers_and_http_1_0_clients() -> None:
    async def scenario() -> None:
        proxy = await _proxy(ME)
        # The program's 1.6 MB answer (Content-Length) and the target's 1.5 MB one
        # (close-delimited, reaching the keep-alive client chunked), on one connection.
        raw = (
            b"GET /huge1 HTTP/1.1\r\nHost: t\r\nX-User: me\r\n\r\n"
            b"GET /huge2 HTTP/1.1\r\nHost: t\r\n\r\n"
        )
        answers = await _client_exchange(proxy.port, raw, 2)
        assert answers == [
            (200, b"program:/huge1:0" * 100_000),
            (200, b"target:/huge2:0" * 100_000),
        ]
        # HTTP/1.0 without keep-alive: one answer, then the connection ends.
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"GET /old HTTP/1.0\r\nX-User: me\r\n\r\n")
        whole = await asyncio.wait_for(reader.read(), 5)  # EOF comes: no hang
        assert whole.startswith(b"HTTP/1.1 200 ") and whole.endswith(b"program:/old:0")
        assert b"chunked" not in whole.lower()

    asyncio.run(scenario())


def test_a_protocol_whose_server_speaks_first_reaches_the_target(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client that waits for the server's greeting (SMTP, MySQL...) sends nothing to detect:
    after the detection timeout, the connection goes to the target as it is."""
    from agent.http import connection

    monkeypatch.setattr(connection, "HTTP_DETECTION_TIMEOUT", 0.2)

    async def scenario() -> None:
        async def greeter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"220 target ready\r\n")
            writer.write((await reader.readline()).upper())
            writer.close()

        target = await asyncio.start_server(greeter, "127.0.0.1", 0)
        target_port = target.sockets[0].getsockname()[1]

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await serve_filtered((reader, writer), ME, _opener(None), _opener(target_port))

        proxy = await asyncio.start_server(serve, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", proxy.sockets[0].getsockname()[1]
        )
        assert await asyncio.wait_for(reader.readline(), 20) == b"220 target ready\r\n"
        writer.write(b"helo me\r\n")
        assert await asyncio.wait_for(reader.read(), 20) == b"HELO ME\r\n"
        writer.close()

    asyncio.run(scenario())


def test_a_body_slower_than_the_body_timeout_is_forwarded_as_it_comes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from agent.http import body

    monkeypatch.setattr(body, "MAX_BODY_BUFFER_TIMEOUT", 0.2)

    async def scenario() -> None:
        proxy = await _proxy(parse_filter({"body": "json", "query": "$.u", "matches": "^me$"}))
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b'POST /slow HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\n{"u": ')

        async def target_reached() -> None:  # the filter stopped waiting: the target's
            while not proxy.target.connections:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(target_reached(), 10)
        writer.write(b'"me"}')
        answer = await asyncio.wait_for(reader.readuntil(b"target:/slow:11"), 10)
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert proxy.target.requests == [(b"POST", b"/slow", b'{"u": "me"}')]
        writer.close()

    asyncio.run(scenario())
