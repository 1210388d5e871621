"""The filtered steal: one stolen HTTP/1.1 connection, request by request, to two upstreams.

Each request the client sends on the connection is routed on its own: to the program (through
a stream to the local side) when the filter matches, to the target's original destination
otherwise. Keep-alive is kept towards the client even when an upstream closes after each
response (busybox httpd does): the upstream connection is simply opened again for the next
request that needs it. Parsing and framing are h11's; this module only routes.

Like any proxy, it drops the hop-by-hop headers (Connection, Keep-Alive, TE...) and lets each
hop frame its messages (an upstream's close-delimited body reaches a keep-alive client chunked).
`Expect: 100-continue` is answered here. An upgrade (WebSocket) is forwarded, and once the
upstream agrees (101), the rest of the connection is piped as raw bytes.

If the first bytes are not HTTP at all, the connection is passed to the target untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import h11

from agent.incoming.http.filter import HttpFilter
from mirrord_trace.protocol.byte_copy import copy_until_eof

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Opener = Callable[[], Awaitable[Streams | None]]

_READ_SIZE = 64 * 1024
_HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"upgrade", b"expect"}
)


class UpstreamGone(Exception):
    """An upstream closed or broke before its response was complete."""


class HttpPeer:
    """One end of an HTTP connection: h11's state machine over asyncio streams."""

    def __init__(self, role: Any, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.conn = h11.Connection(our_role=role)
        self.reader = reader
        self.writer = writer
        self.raw_seen = bytearray()  # the first bytes, kept until the first request is parsed
        self.keep_raw = role is h11.SERVER

    async def next_event(self) -> Any:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await self.reader.read(_READ_SIZE)
            if self.keep_raw:
                self.raw_seen += data
            self.conn.receive_data(data)

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


def _is_upgrade(request: h11.Request) -> bool:
    return any(name == b"upgrade" for name, _ in request.headers)


async def pipe_both(a: Streams, b: Streams, a_first: bytes = b"", b_first: bytes = b"") -> None:
    """Relay raw bytes both ways until both directions end."""
    if a_first:
        b[1].write(a_first)
    if b_first:
        a[1].write(b_first)
    await asyncio.gather(
        copy_until_eof(a[0], b[1], _READ_SIZE), copy_until_eof(b[0], a[1], _READ_SIZE)
    )
    a[1].close()
    b[1].close()


class FilteredConnection:
    """Serves one stolen client connection until either side ends it."""

    def __init__(
        self,
        client: Streams,
        http_filter: HttpFilter,
        open_program: Opener,
        open_target: Opener,
    ) -> None:
        self.client = HttpPeer(h11.SERVER, *client)
        self.filter = http_filter
        self._openers = {"program": open_program, "target": open_target}
        self._upstreams: dict[str, HttpPeer] = {}
        self.routed: list[str] = []  # where each request went, in order (for tests and logs)

    async def serve(self) -> None:
        try:
            await self._serve()
        except (ConnectionError, OSError, h11.ProtocolError, UpstreamGone):
            pass
        finally:
            self.client.close()
            for upstream in self._upstreams.values():
                upstream.close()

    async def _serve(self) -> None:
        while True:
            try:
                event = await self.client.next_event()
            except h11.RemoteProtocolError:
                if not self.routed:
                    await self._pass_through_raw()
                    return
                raise
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return
            if not isinstance(event, h11.Request):
                return
            self.client.keep_raw = False
            if not await self._exchange(event):
                return
            if not self.client.reusable:
                return
            self.client.conn.start_next_cycle()

    async def _exchange(self, request: h11.Request) -> bool:
        """Forward one request and its response; False when the connection cannot go on."""
        wanted = self.filter.matches(request.target, request.headers.raw_items())
        side = "program" if wanted else "target"
        upstream = await self._upstream(side)
        if upstream is None and side == "program":
            side = "target"  # the program's session is gone: the target answers, as before
            upstream = await self._upstream(side)
        if upstream is None:
            self._answer_error(502, b"the original destination cannot be reached\n")
            return False
        self.routed.append(side)
        if self.client.conn.they_are_waiting_for_100_continue:
            self.client.send(h11.InformationalResponse(status_code=100, headers=[]))
        upgrade = _is_upgrade(request)
        upstream.send(
            h11.Request(
                method=request.method,
                target=request.target,
                headers=_forwarded_headers(request.headers, keep_upgrade=upgrade),
            )
        )
        await self._forward_body(upstream)
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
        try:
            streams = await self._openers[side]()
        except OSError:
            return None
        if streams is None:
            return None
        peer = HttpPeer(h11.CLIENT, *streams)
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

    async def _pass_through_raw(self) -> None:
        try:
            target = await self._openers["target"]()
        except OSError:
            target = None
        if target is None:
            return
        await pipe_both(
            (self.client.reader, self.client.writer), target, a_first=bytes(self.client.raw_seen)
        )
