"""The filtered steal for HTTP/1.x: one stolen connection, request by request, to two upstreams.

Each request the client sends on the connection is routed on its own: to the program (through
a stream to the local side) when the filter matches, to the target's original destination
otherwise. Keep-alive is kept towards the client even when an upstream closes after each
response (busybox httpd does): the upstream connection is simply opened again for the next
request that needs it. Parsing and framing are h11's; this module only routes.

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

import contextlib
from dataclasses import dataclass
from typing import Any

import h11

from agent.http.body import BodyCollector
from agent.http.filter import Filter, RequestHead
from agent.http.relay import Opener, Streams, open_or_none, pipe_both

_READ_SIZE = 256 * 1024
_HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"upgrade", b"expect"}
)
_H2C_DROPPED = _HOP_BY_HOP | {b"http2-settings", b"host", b"transfer-encoding"}


class UpstreamGone(Exception):
    """An upstream closed or broke before its response was complete."""


@dataclass
class H2cUpgrade:
    """The client switched to HTTP/2 by `Upgrade: h2c`: what the HTTP/2 side needs."""

    settings: bytes
    headers: list[tuple[bytes, bytes]]  # the request as HTTP/2 headers (stream 1)
    body: bytes
    rest: bytes  # what the client sent after its request (its HTTP/2 preface...)


class HttpPeer:
    """One end of an HTTP connection: h11's state machine over asyncio streams."""

    def __init__(self, role: Any, streams: Streams, first: bytes = b"") -> None:
        self.conn = h11.Connection(our_role=role)
        self.reader, self.writer = streams
        if first:
            self.conn.receive_data(first)

    async def next_event(self) -> Any:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.conn.receive_data(await self.reader.read(_READ_SIZE))

    def send(self, event: Any) -> None:
        data = self.conn.send(event)
        if data:
            self.writer.write(data)

    async def drain(self) -> None:
        await self.writer.drain()

    @property
    def reusable(self) -> bool:
        return self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE

    def close(self) -> None:
        self.writer.close()


def _forwarded_headers(headers: Any, keep_upgrade: bool) -> list[tuple[bytes, bytes]]:
    """The end-to-end headers, with the client's spelling; hop-by-hop ones stay on their hop."""
    kept = []
    for name, value in headers.raw_items():
        lowered = name.lower()
        if lowered in _HOP_BY_HOP and not (keep_upgrade and lowered in (b"connection", b"upgrade")):
            continue
        kept.append((name, value))
    return kept


def _header(request: h11.Request, name: bytes) -> bytes | None:
    for key, value in request.headers:
        if key == name:
            return value
    return None


def _h2_headers(request: h11.Request) -> list[tuple[bytes, bytes]]:
    authority = _header(request, b"host") or b""
    headers = [
        (b":method", request.method),
        (b":scheme", b"http"),
        (b":authority", authority),
        (b":path", request.target),
    ]
    headers += [(n, v) for n, v in request.headers if n not in _H2C_DROPPED]
    return headers


class FilteredConnection:
    """Serves one stolen client connection until either side ends it."""

    def __init__(
        self,
        client: Streams,
        http_filter: Filter,
        open_program: Opener,
        open_target: Opener,
        first: bytes = b"",
    ) -> None:
        self.client = HttpPeer(h11.SERVER, client, first)
        self.filter = http_filter
        self._openers = {"program": open_program, "target": open_target}
        self._upstreams: dict[str, HttpPeer] = {}
        self.routed: list[str] = []  # where each request went, in order (for tests and logs)
        self.upgrade: H2cUpgrade | None = None

    async def serve(self) -> H2cUpgrade | None:
        """Serve requests; the h2c upgrade the client asked for, if it did (the caller goes on
        in HTTP/2 on the same connection)."""
        try:
            await self._serve()
        except (ConnectionError, OSError, h11.ProtocolError, UpstreamGone):
            pass
        finally:
            for upstream in self._upstreams.values():
                upstream.close()
            if self.upgrade is None:
                self.client.close()
        return self.upgrade

    async def _serve(self) -> None:
        while True:
            event = await self.client.next_event()
            if not isinstance(event, h11.Request):
                return  # closed, paused after a refused upgrade, or not a request
            if not await self._exchange(event) or not self.client.reusable:
                return
            self.client.conn.start_next_cycle()

    async def _exchange(self, request: h11.Request) -> bool:
        """Forward one request and its response; False when the connection cannot go on."""
        head = RequestHead.of(request.method, request.target, request.headers.raw_items())
        if self.client.conn.they_are_waiting_for_100_continue:
            self.client.send(h11.InformationalResponse(status_code=100, headers=[]))
        early: list[Any] = []
        body: bytes | None = None
        if self.filter.needs_body:
            body, early = await self._collect_body(request)
        if _is_h2c_upgrade(request):
            return await self._upgrade_to_h2(request, early)
        side = "program" if self.filter.matches(head, body) else "target"
        upstream = await self._upstream(side)
        if upstream is None and side == "program":
            side = "target"  # the program's session is gone: the target answers, as before
            upstream = await self._upstream(side)
        if upstream is None:
            self._answer_error(502, b"the original destination cannot be reached\n")
            return False
        self.routed.append(side)
        upgrade = _is_upgrade(request)
        upstream.send(
            h11.Request(
                method=request.method,
                target=request.target,
                headers=_forwarded_headers(request.headers, keep_upgrade=upgrade),
            )
        )
        for event in early:
            upstream.send(event)
        if not early or not isinstance(early[-1], h11.EndOfMessage):
            await self._forward_body(upstream)
        else:
            await upstream.drain()
        switched = await self._forward_response(upstream, side)
        if switched:
            await self._pipe_switched(upstream, side)
            return False
        if upstream.reusable:
            upstream.conn.start_next_cycle()
        else:
            upstream.close()
            del self._upstreams[side]
        return True

    async def _collect_body(self, request: h11.Request) -> tuple[bytes | None, list[Any]]:
        """The body for a body filter (None when longer than the bound) and the events read
        for it, to forward before the rest."""
        length = _header(request, b"content-length")
        collector = BodyCollector(int(length) if length and length.isdigit() else None)
        events: list[Any] = []
        if collector.too_big:
            return None, events
        while True:
            event = await self.client.next_event()
            if isinstance(event, h11.Data):
                events.append(event)
                if not collector.add(event.data):
                    return None, events
            elif isinstance(event, h11.EndOfMessage):
                events.append(event)
                collector.finish()
                return collector.body, events
            else:
                raise h11.RemoteProtocolError("the request body ended early")

    async def _upgrade_to_h2(self, request: h11.Request, early: list[Any]) -> bool:
        body = b"".join(event.data for event in early if isinstance(event, h11.Data))
        if not early or not isinstance(early[-1], h11.EndOfMessage):
            while True:
                event = await self.client.next_event()
                if isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
                else:
                    raise h11.RemoteProtocolError("the request body ended early")
        settings = _header(request, b"http2-settings") or b""
        self.client.send(
            h11.InformationalResponse(
                status_code=101,
                headers=[("connection", "Upgrade"), ("upgrade", "h2c")],
                reason=b"Switching Protocols",
            )
        )
        await self.client.drain()
        rest, _ = self.client.conn.trailing_data
        self.upgrade = H2cUpgrade(settings, _h2_headers(request), body, bytes(rest))
        return False

    async def _forward_body(self, upstream: HttpPeer) -> None:
        while True:
            event = await self.client.next_event()
            if isinstance(event, h11.Data):
                upstream.send(event)
                await upstream.drain()
            elif isinstance(event, h11.EndOfMessage):
                upstream.send(event)
                await upstream.drain()
                return
            else:
                raise h11.RemoteProtocolError("the request body ended early")

    async def _forward_response(self, upstream: HttpPeer, side: str) -> bool:
        """Relay the response; True when the connection switched protocols (101)."""
        started = False
        try:
            while True:
                event = await upstream.next_event()
                if isinstance(event, h11.InformationalResponse):
                    if event.status_code == 101:
                        self.client.send(event)
                        return True
                    if event.status_code != 100:  # 100 went to the client already
                        self.client.send(event)
                elif isinstance(event, h11.Response):
                    started = True
                    self.client.send(
                        h11.Response(
                            status_code=event.status_code,
                            headers=_forwarded_headers(event.headers, keep_upgrade=False),
                            reason=event.reason,
                        )
                    )
                elif isinstance(event, h11.Data):
                    self.client.send(event)
                    await self.client.drain()
                elif isinstance(event, h11.EndOfMessage):
                    self.client.send(event)
                    await self.client.drain()
                    return False
                else:
                    raise UpstreamGone(f"the {side} closed the connection mid-response")
        except (UpstreamGone, ConnectionError, h11.RemoteProtocolError):
            if not started:
                self._answer_error(502, f"the {side} did not answer\n".encode())
            raise UpstreamGone(side) from None

    async def _pipe_switched(self, upstream: HttpPeer, side: str) -> None:
        client_rest, _ = self.client.conn.trailing_data
        upstream_rest, _ = upstream.conn.trailing_data
        del self._upstreams[side]
        await pipe_both(
            (self.client.reader, self.client.writer),
            (upstream.reader, upstream.writer),
            a_first=client_rest,
            b_first=upstream_rest,
        )

    async def _upstream(self, side: str) -> HttpPeer | None:
        peer = self._upstreams.get(side)
        if peer is not None:
            return peer
        streams = await open_or_none(self._openers[side])
        if streams is None:
            return None
        peer = HttpPeer(h11.CLIENT, streams)
        self._upstreams[side] = peer
        return peer

    def _answer_error(self, status: int, body: bytes) -> None:
        with contextlib.suppress(h11.LocalProtocolError):
            self.client.send(
                h11.Response(
                    status_code=status,
                    headers=[("content-length", str(len(body))), ("connection", "close")],
                )
            )
            self.client.send(h11.Data(data=body))
            self.client.send(h11.EndOfMessage())


def _is_upgrade(request: h11.Request) -> bool:
    return _header(request, b"upgrade") is not None


def _is_h2c_upgrade(request: h11.Request) -> bool:
    upgrade = _header(request, b"upgrade") or b""
    protocols = {p.strip().lower() for p in upgrade.split(b",")}
    return b"h2c" in protocols and _header(request, b"http2-settings") is not None
