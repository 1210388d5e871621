"""The filtered steal's routing, over real sockets: a client connection is served request by
request by two upstreams (the program: keep-alive; the target: closes after every response,
close-delimited bodies, like busybox httpd), following mirrord's header/path filter rules."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import h11
import pytest

from agent.incoming.http.filter import HttpFilter
from agent.incoming.http.proxy import FilteredConnection, Streams
from mirrord_trace.protocol.requests import InvalidRequest

# ---- the filter itself (mirrord semantics) ---------------------------------------------------


def test_header_filter_matches_name_colon_value_case_insensitively() -> None:
    flt = HttpFilter.from_fields("^x-user: me$", "")
    assert flt is not None
    assert flt.matches(b"/", [(b"X-User", b"ME")])
    assert flt.matches(b"/", [(b"Host", b"a"), (b"x-user", b"me")])
    assert not flt.matches(b"/", [(b"x-user", b"meme")])
    assert not flt.matches(b"/", [(b"x-other", b"me")])


def test_path_filter_matches_the_path_or_the_path_with_its_query() -> None:
    flt = HttpFilter.from_fields("", "^/api/v1$")
    assert flt is not None
    assert flt.matches(b"/api/v1?debug=1", [])  # the path alone matches
    assert flt.matches(b"/API/V1", [])
    assert not flt.matches(b"/api/v2", [])
    by_query = HttpFilter.from_fields("", r"debug=1")
    assert by_query is not None and by_query.matches(b"/x?debug=1", [])  # path + query


def test_both_filters_must_match_and_none_means_no_filter() -> None:
    flt = HttpFilter.from_fields("^x-user: me$", "^/api")
    assert flt is not None
    assert flt.matches(b"/api", [(b"x-user", b"me")])
    assert not flt.matches(b"/web", [(b"x-user", b"me")])
    assert not flt.matches(b"/api", [])
    assert HttpFilter.from_fields("", "") is None


def test_a_bad_regex_is_an_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="header_filter"):
        HttpFilter.from_fields("(unclosed", "")


# ---- the proxy, with real upstream servers ---------------------------------------------------


@dataclass
class Upstream:
    """A little HTTP server; `keep_alive=False` answers like busybox httpd (close-delimited)."""

    name: str
    keep_alive: bool
    upgrades: bool = False
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
                headers = [("content-length", str(len(answer)))] if self.keep_alive else []
                if not self.keep_alive:
                    headers.append(("connection", "close"))
                writer.write(conn.send(h11.Response(status_code=200, headers=headers)))
                writer.write(conn.send(h11.Data(data=answer)))
                writer.write(conn.send(h11.EndOfMessage()) or b"")
                await writer.drain()
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


async def _proxy(http_filter: HttpFilter, program_available: bool = True) -> Proxy:
    program, target = Upstream("program", keep_alive=True, upgrades=True), Upstream("target", False)
    program_port, target_port = await program.start(), await target.start()
    routes: list[list[str]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = FilteredConnection(
            (reader, writer),
            http_filter,
            _opener(program_port if program_available else None),
            _opener(target_port),
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


ME = HttpFilter.from_fields("^x-user: me$", "")


def test_requests_on_one_keep_alive_connection_go_where_the_filter_says() -> None:
    async def scenario() -> None:
        assert ME is not None
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
        assert ME is not None
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
        assert ME is not None
        proxy = await _proxy(ME, program_available=False)
        request = b"GET /x HTTP/1.1\r\nHost: t\r\nX-User: me\r\n\r\n"
        answers = await _client_exchange(proxy.port, request, 1)
        assert answers == [(200, b"target:/x:0")]

    asyncio.run(scenario())


def test_traffic_that_is_not_http_passes_to_the_target_untouched() -> None:
    async def scenario() -> None:
        assert ME is not None
        received = bytearray()

        async def raw_target(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(4096):
                received.extend(data)
            writer.write(b"raw answer")
            writer.close()

        target = await asyncio.start_server(raw_target, "127.0.0.1", 0)
        target_port = target.sockets[0].getsockname()[1]

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            to_target = _opener(target_port)
            connection = FilteredConnection((reader, writer), ME, _opener(None), to_target)
            await connection.serve()

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
        assert ME is not None
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
        assert ME is not None
        proxy = await _proxy(ME)
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n\x00\x01garbage\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 5)  # ends: no hang
        assert data.startswith(b"HTTP/1.1 200 ") and b"target:/ok:0" in data

    asyncio.run(scenario())


def test_socketpair_upstreams_work_like_tcp_ones() -> None:
    """The program side really is a socket pair bridged to a stream: same behaviour."""

    async def scenario() -> None:
        assert ME is not None
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
            connection = FilteredConnection((reader, writer), ME, open_program, to_target)
            await connection.serve()

        proxy = await asyncio.start_server(serve, "127.0.0.1", 0)
        raw = b"GET /a HTTP/1.1\r\nHost: t\r\nx-user: me\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\n\r\n"
        answers = await _client_exchange(proxy.sockets[0].getsockname()[1], raw, 2)
        assert answers == [(200, b"program:/a:0"), (200, b"target:/b:0")]
        serving.cancel()

    asyncio.run(scenario())
