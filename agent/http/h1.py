"""The filtered steal for HTTP/1.x: one stolen connection, request by request, to two upstreams.

Each request the client sends on the connection is routed on its own: to the program (through
a stream to the local side, or a connection handed over) when the filter matches, to the
target's original destination otherwise. Keep-alive is kept towards the client even when an
upstream closes after each response (busybox httpd does): the upstream connection is simply
opened again for the next request that needs it. Messages are read with httptools
(agent.http.h1_messages); this module routes.

Like any proxy, it drops the hop-by-hop headers (Connection, Keep-Alive, TE...) and lets each
hop frame its messages (an upstream's close-delimited body reaches a keep-alive client chunked).
`Expect: 100-continue` is answered here. An upgrade (WebSocket) is forwarded, and once the
chosen upstream agrees (101), the rest of the connection is piped as raw bytes. An h2c upgrade
(`Upgrade: h2c` + `HTTP2-Settings`) is answered here with 101, and the connection goes on as
HTTP/2 (agent.http.h2_router), its first stream being this request.

A body filter sees the body collected up to the bound of agent.http.body; a longer body does
not match it and is forwarded as it comes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from agent.http.body import BodyCollector, collect_timeout
from agent.http.filter import RequestHead
from agent.http.h1_messages import (
    END,
    EOF,
    Body,
    Head,
    MessageReader,
    ProtocolError,
    body_bytes,
    end_bytes,
    error_response,
    request_bytes,
    response_bytes,
)
from agent.http.relay import Streams, open_or_none, pipe_both
from agent.http.routes import TARGET, Routes

_H2C_DROPPED = frozenset(
    {b"connection", b"keep-alive", b"upgrade", b"http2-settings", b"host", b"transfer-encoding",
     b"te", b"expect", b"content-length", b"proxy-connection"}
)  # fmt: skip


class UpstreamGone(Exception):
    """An upstream closed or broke before its response was complete."""


@dataclass
class H2cUpgrade:
    """The client switched to HTTP/2 by `Upgrade: h2c`: what the HTTP/2 side needs."""

    settings: bytes
    headers: list[tuple[bytes, bytes]]  # the request as HTTP/2 headers (stream 1)
    body: bytes
    rest: bytes  # what the client sent after its request (its HTTP/2 preface...)


class Upstream:
    """A connection to the program or the target, and its responses."""

    def __init__(self, streams: Streams) -> None:
        self.reader = MessageReader(streams[0], requests=False)
        self.stream_reader, self.writer = streams
        self.reusable = True
        self.served = 0  # responses read on this connection

    def close(self) -> None:
        self.writer.close()


def _h2_headers(head: Head) -> list[tuple[bytes, bytes]]:
    headers = [
        (b":method", head.method),
        (b":scheme", b"http"),
        (b":authority", head.header(b"host") or b""),
        (b":path", head.target),
    ]
    headers += [(n.lower(), v) for n, v in head.headers if n.lower() not in _H2C_DROPPED]
    return headers


def _is_h2c_upgrade(head: Head) -> bool:
    upgrade = head.header(b"upgrade") or b""
    protocols = {p.strip().lower() for p in upgrade.split(b",")}
    return b"h2c" in protocols and head.header(b"http2-settings") is not None


class FilteredConnection:
    """Serves one stolen client connection until either side ends it."""

    def __init__(
        self,
        client: Streams,
        routes: Routes,
        first: bytes = b"",
    ) -> None:
        self.client_reader = MessageReader(client[0], requests=True, first=first)
        self.client = client
        self.writer = client[1]
        self.routes = routes
        self._upstreams: dict[str, Upstream] = {}
        self.routed: list[str] = []  # where each request went, in order (for tests and logs)
        self.upgrade: H2cUpgrade | None = None

    async def serve(self) -> H2cUpgrade | None:
        """Serve requests; the h2c upgrade the client asked for, if it did (the caller goes on
        in HTTP/2 on the same connection)."""
        try:
            await self._serve()
        except (ConnectionError, OSError, ProtocolError, UpstreamGone):
            pass
        finally:
            for upstream in self._upstreams.values():
                upstream.close()
            if self.upgrade is None:
                self.writer.close()
        return self.upgrade

    async def _serve(self) -> None:
        while True:
            event = await self.client_reader.next()
            if not isinstance(event, Head):
                return  # closed (or garbage where a request should start)
            if not await self._exchange(event):
                return

    async def _exchange(self, head: Head) -> bool:
        """Forward one request and its response; False when the connection cannot go on."""
        if (head.header(b"expect") or b"").lower() == b"100-continue":
            self.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        early: list[Body | str] = []
        body: bytes | None = None
        if head.upgrade and _is_h2c_upgrade(head):
            await self._upgrade_to_h2(head)
            return False
        if self.routes.needs_body and not head.upgrade:
            body, early = await self._collect_body(head)
        request = RequestHead(head.method, head.target, tuple(head.headers))
        side = self.routes.choose(request, body)
        upstream = await self._upstream(side)
        if upstream is None and side != TARGET:
            side = TARGET  # the program's session is gone: the target answers, as before
            upstream = await self._upstream(side)
        if upstream is None:
            self.writer.write(
                error_response(502, b"Bad Gateway", b"the original destination cannot be reached\n")
            )
            return False
        self.routed.append(side)
        upstream.reader.expect_head_response(head.method == b"HEAD")
        upstream.writer.write(request_bytes(head))
        if head.upgrade:
            return await self._upgrade(head, upstream, side)
        ended = await self._forward_body(head, upstream, early)
        if upstream.served and not head.has_body and await self._closed_while_idle(upstream):
            # A kept-alive connection the upstream had closed (its idle timeout) before our
            # request reached it: the request was not seen, so it goes again on a new one.
            upstream.close()
            del self._upstreams[side]
            reopened = await self._upstream(side)
            if reopened is None:
                self.writer.write(error_response(502, b"Bad Gateway", b"upstream closed\n"))
                return False
            upstream = reopened
            upstream.reader.expect_head_response(head.method == b"HEAD")
            upstream.writer.write(request_bytes(head))
        reusable_client = await self._forward_response(head, upstream, side)
        upstream.served += 1
        if not upstream.reusable:
            upstream.close()
            del self._upstreams[side]
        return ended and reusable_client and head.keep_alive

    async def _collect_body(self, head: Head) -> tuple[bytes | None, list[Body | str]]:
        """The body for a body filter (None when longer than the bound) and the events read
        for it, to forward before the rest."""
        events: list[Body | str] = []
        if not head.has_body:
            return b"", events
        collector = BodyCollector(head.length)
        if collector.too_big:
            return None, events
        try:
            async with asyncio.timeout(collect_timeout()):
                while True:
                    event = await self.client_reader.next()
                    if isinstance(event, Body):
                        events.append(event)
                        if not collector.add(event.data):
                            return None, events
                    elif event == END:
                        events.append(event)
                        collector.finish()
                        return collector.body, events
                    else:
                        raise ProtocolError("the request body ended early")
        except TimeoutError:
            return None, events  # too slow to wait for: no match, forwarded as it comes

    async def _forward_body(self, head: Head, upstream: Upstream, early: list[Body | str]) -> bool:
        """Relay the request body; False when the client went away in the middle."""
        chunked, writer = head.chunked, upstream.writer
        pending = list(early)
        while True:
            event = pending.pop(0) if pending else await self.client_reader.next()
            if isinstance(event, Body):
                writer.write(body_bytes(event.data, chunked))
                if not pending:
                    await writer.drain()
            elif event == END:
                writer.write(end_bytes(chunked))
                return True
            else:
                return False

    async def _forward_response(self, request: Head, upstream: Upstream, side: str) -> bool:
        """Relay the response; whether the client connection can carry another request."""
        started = False
        framing = None
        # What one read of the upstream gave goes to the client in one write (a send() is
        # most of a small request's cost): written when the reader has to wait again.
        out: list[bytes] = []
        reader = upstream.reader
        try:
            while True:
                if out and not reader.has_events:
                    self.writer.write(b"".join(out))
                    out.clear()
                    await self.writer.drain()
                event = await reader.next()
                if isinstance(event, Head):
                    if event.status < 200:
                        if event.status != 100:  # 100 Continue went to the client already
                            out.append(response_bytes(event, request)[0])
                        await self._skip_to_end(upstream)
                        continue
                    started = True
                    data, framing = response_bytes(event, request)
                    out.append(data)
                    upstream.reusable = event.keep_alive and not event.until_close
                elif isinstance(event, Body):
                    assert framing is not None
                    out.append(body_bytes(event.data, framing.chunked))
                elif event == END and framing is not None:
                    out.append(end_bytes(framing.chunked))
                    self.writer.write(b"".join(out))
                    return not framing.close_after
                else:
                    raise UpstreamGone(f"the {side} closed the connection mid-response")
        except (UpstreamGone, ConnectionError, ProtocolError):
            upstream.reusable = False
            if out:
                self.writer.write(b"".join(out))
            if not started:
                self.writer.write(
                    error_response(502, b"Bad Gateway", f"the {side} did not answer\n".encode())
                )
            raise UpstreamGone(side) from None

    async def _closed_while_idle(self, upstream: Upstream) -> bool:
        """Whether the upstream closed without a byte of response (peeking at its reader)."""
        try:
            event = await upstream.reader.next()
        except ConnectionError:
            return True
        if event == EOF:
            return True
        upstream.reader.collector.events.appendleft(event)  # not consumed: read it again
        return False

    async def _skip_to_end(self, upstream: Upstream) -> None:
        while (event := await upstream.reader.next()) != END:
            if event == EOF:
                raise UpstreamGone("closed after an interim response")

    async def _upgrade(self, head: Head, upstream: Upstream, side: str) -> bool:
        """A WebSocket (or other) upgrade: the response decides; after a 101, raw bytes."""
        event = await upstream.reader.next()
        if not isinstance(event, Head):
            upstream.reusable = False
            self.writer.write(
                error_response(502, b"Bad Gateway", f"the {side} did not answer\n".encode())
            )
            return False
        data, framing = response_bytes(event, head)
        self.writer.write(data)
        if event.status != 101:
            # Refused: the response goes back, then the connection ends (its parser expected
            # the switch).
            while isinstance(event := await upstream.reader.next(), Body):
                self.writer.write(body_bytes(event.data, framing.chunked))
            self.writer.write(end_bytes(framing.chunked))
            upstream.reusable = False
            return False
        del self._upstreams[side]
        await pipe_both(
            self.client,
            (upstream.stream_reader, upstream.writer),
            a_first=head.rest,
            b_first=event.rest,
        )
        return False

    async def _upgrade_to_h2(self, head: Head) -> None:
        rest = head.rest
        length = head.length or 0
        while len(rest) < length:
            more = await self.client[0].read(length - len(rest))
            if not more:
                raise ProtocolError("the request body ended early")
            rest += more
        self.writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
        )
        settings = head.header(b"http2-settings") or b""
        self.upgrade = H2cUpgrade(settings, _h2_headers(head), rest[:length], rest[length:])

    async def _upstream(self, side: str) -> Upstream | None:
        upstream = self._upstreams.get(side)
        if upstream is not None:
            return upstream
        streams = await open_or_none(self.routes.openers[side])
        if streams is None:
            return None
        upstream = Upstream(streams)
        self._upstreams[side] = upstream
        return upstream
