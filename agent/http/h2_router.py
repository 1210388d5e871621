"""The filtered steal for HTTP/2, sans I/O: one client connection, streams routed one by one.

HTTP/2 connections meet here (all h2's state machines, fed bytes, giving bytes): `client`
(we are its server), and one per upstream side: each subscriber's program and the `target`
(we are their client, h2c prior knowledge: a server that took h2c from this client takes it
from us too). Each client stream
is decided on its own once its head (and, for a body filter, its bounded body) is in: it is
opened on the chosen upstream and everything that follows, data, trailers (gRPC's status),
resets, is relayed between the two streams. Streaming calls just keep relaying both ways.

Flow control is end to end: what one side sent is acknowledged to it only once the other side
took it (our send window allowed it), so a slow reader slows its writer and nothing is queued
without bound. An upstream's SETTINGS_MAX_CONCURRENT_STREAMS is respected by holding new
streams until one ends.

The driver (agent.http.connection) moves bytes: it feeds `receive(endpoint, data)`, writes
`data_to_send(endpoint)`, opens the upstreams named by `wanted()` and reports
`connected` / `unavailable` / `closed`.
"""

from __future__ import annotations

import contextlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from agent.http.body import BodyCollector
from agent.http.filter import RequestHead
from agent.http.routes import TARGET, Routes

CLIENT = "client"
# Our receive windows: large enough that a body filter's bounded body arrives without
# waiting on us, small enough to bound what a slow reader lets pile up.
_WINDOW = 1 << 20


@dataclass
class _Item:
    """Something queued for one stream of one connection, in order."""

    data: bytes = b""
    headers: list[tuple[bytes, bytes]] | None = None
    end: bool = False
    ack: tuple[str, int, int] | None = None  # (endpoint, stream, flow length) to acknowledge


@dataclass
class Exchange:
    """One client stream and where it went."""

    client_id: int
    headers: list[tuple[bytes, bytes]]
    head: RequestHead
    side: str | None = None
    upstream_id: int | None = None
    collector: BodyCollector | None = None
    waiting: list[_Item] = field(default_factory=list)  # before the upstream stream exists
    responded: bool = False
    request_ended: bool = False  # the client's END_STREAM is queued for the upstream
    response_ended: bool = False  # the upstream's END_STREAM is queued for the client
    finished: bool = False

    def content_length(self) -> int | None:
        for name, value in self.head.headers:
            if name.lower() == b"content-length" and value.isdigit():
                return int(value)
        return None


def request_head(headers: list[tuple[bytes, bytes]]) -> RequestHead:
    pseudo = {name: value for name, value in headers if name.startswith(b":")}
    regular = [(name, value) for name, value in headers if not name.startswith(b":")]
    return RequestHead.of(pseudo.get(b":method", b""), pseudo.get(b":path", b""), regular)


class H2Router:
    def __init__(self, routes: Routes) -> None:
        self.routes = routes
        self.conns: dict[str, h2.connection.H2Connection] = {CLIENT: self._new_conn(False)}
        self.exchanges: dict[int, Exchange] = {}
        self.by_upstream: dict[tuple[str, int], Exchange] = {}
        self.outbox: dict[tuple[str, int], deque[_Item]] = {}
        self.held: dict[str, deque[Exchange]] = {side: deque() for side in routes.openers}
        self.connecting: set[str] = set()
        self.gone: set[str] = set()  # upstreams that cannot be had (the program's session)
        self.routed: list[str] = []  # where each stream went, in order (tests, logs)
        self.client_closed = False
        self.new_collections: list[int] = []  # streams whose body a filter waits for (timers)

    @staticmethod
    def _new_conn(client_side: bool) -> h2.connection.H2Connection:
        # The client's headers are checked once, when they come in; what goes out was
        # received (and checked) on the other connection, and the upstreams (the program,
        # the target's server) are trusted like the target trusts them: h2's per-header
        # checks and normalisation are most of its cost per request.
        config = h2.config.H2Configuration(
            client_side=client_side,
            header_encoding=None,
            validate_inbound_headers=not client_side,
            normalize_inbound_headers=not client_side,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            logger=None,
        )
        conn = h2.connection.H2Connection(config)
        settings = {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _WINDOW}
        if client_side:
            settings[h2.settings.SettingCodes.ENABLE_PUSH] = 0
        conn.local_settings = h2.settings.Settings(client=client_side, initial_values=settings)
        return conn

    # -- set-up ------------------------------------------------------------------------------
    def start(self) -> None:
        """A client that opened with the HTTP/2 preface (prior knowledge)."""
        conn = self.conns[CLIENT]
        conn.initiate_connection()
        conn.increment_flow_control_window(_WINDOW - 65535)

    def start_upgraded(
        self, settings_header: bytes, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> None:
        """A client that asked for h2c by `Upgrade: h2c`: its HTTP/1.1 request is stream 1."""
        conn = self.conns[CLIENT]
        conn.initiate_upgrade_connection(settings_header)
        conn.increment_flow_control_window(_WINDOW - 65535)
        exchange = Exchange(1, headers, request_head(headers))
        self.exchanges[1] = exchange
        if body:
            exchange.waiting.append(_Item(data=body))
        exchange.waiting.append(_Item(end=True))
        exchange.request_ended = True
        self._decide(exchange, None)

    # -- the driver's interface ----------------------------------------------------------------
    def receive(self, endpoint: str, data: bytes) -> None:
        conn = self.conns.get(endpoint)
        if conn is None:
            return
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            if endpoint == CLIENT:
                self.client_closed = True
            else:
                self.closed(endpoint)
            return
        for event in events:
            self._on_event(endpoint, event)

    def data_to_send(self, endpoint: str) -> bytes:
        conn = self.conns.get(endpoint)
        return conn.data_to_send() if conn is not None else b""

    def wanted(self) -> list[str]:
        """Upstreams with streams waiting that are neither open nor being opened."""
        return [
            side
            for side in self.held
            if self.held[side] and side not in self.conns and side not in self.connecting
        ]

    def connecting_to(self, side: str) -> None:
        self.connecting.add(side)

    def connected(self, side: str) -> None:
        self.connecting.discard(side)
        conn = self._new_conn(True)
        conn.initiate_connection()
        conn.increment_flow_control_window(_WINDOW - 65535)
        self.conns[side] = conn
        self._open_held(side)

    def unavailable(self, side: str) -> None:
        """The upstream cannot be had: the program's streams go to the target instead; the
        target's get a 502."""
        self.connecting.discard(side)
        self.gone.add(side)
        held, self.held[side] = self.held[side], deque()
        for exchange in held:
            if side != TARGET:
                self._route(exchange, TARGET)
            else:
                self._fail(exchange, b"the original destination cannot be reached\n")

    def closed(self, side: str) -> None:
        """The upstream's connection ended: its unfinished streams fail (502 when nothing was
        answered yet); later streams for it open a new connection."""
        self.conns.pop(side, None)
        self.connecting.discard(side)
        for key in [key for key in self.by_upstream if key[0] == side]:
            exchange = self.by_upstream.pop(key)
            self.outbox.pop(key, None)
            if not exchange.finished:
                self._fail(exchange, f"the {side} did not answer\n".encode())

    def give_up_collecting(self, stream_id: int) -> None:
        """The body filter waited long enough for this stream's body (the driver's timer): the
        stream is decided without it (no body match) and what came is forwarded."""
        exchange = self.exchanges.get(stream_id)
        if exchange is not None and exchange.side is None and exchange.collector is not None:
            self._decide(exchange, None)

    @property
    def done(self) -> bool:
        return self.client_closed

    # -- events --------------------------------------------------------------------------------
    def _on_event(self, endpoint: str, event: Any) -> None:
        if endpoint == CLIENT:
            self._on_client_event(event)
        else:
            self._on_upstream_event(endpoint, event)

    def _on_client_event(self, event: Any) -> None:
        if isinstance(event, h2.events.RequestReceived):
            headers = list(event.headers)
            exchange = Exchange(event.stream_id, headers, request_head(headers))
            self.exchanges[event.stream_id] = exchange
            ended = event.stream_ended is not None
            if ended:
                exchange.waiting.append(_Item(end=True))
                exchange.request_ended = True
            if self.routes.needs_body and not ended:
                exchange.collector = BodyCollector(exchange.content_length())
                self.new_collections.append(event.stream_id)
            else:
                self._decide(exchange, None)
            return
        if isinstance(event, h2.events.DataReceived | h2.events.TrailersReceived):
            self._from_client(event)
        elif isinstance(event, h2.events.StreamEnded):
            self._client_stream_ended(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            exchange = self.exchanges.pop(event.stream_id, None)
            if exchange is not None and exchange.side and exchange.upstream_id is not None:
                self._reset(exchange.side, exchange.upstream_id, event.error_code)
                self.by_upstream.pop((exchange.side, exchange.upstream_id), None)
        elif isinstance(event, h2.events.WindowUpdated):
            self._flush_window(CLIENT, event.stream_id)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.client_closed = True

    def _from_client(self, event: Any) -> None:
        exchange = self.exchanges.get(event.stream_id)
        if exchange is None:
            return
        if isinstance(event, h2.events.TrailersReceived):
            item = _Item(headers=list(event.headers), end=True)  # trailers end the stream
        else:
            ack = (CLIENT, event.stream_id, event.flow_controlled_length)
            item = _Item(data=event.data, end=event.stream_ended is not None, ack=ack)
        collector = exchange.collector
        if collector is not None and exchange.side is None:
            item.end = False  # the end comes with the decision (_client_stream_ended)
            if item.ack is not None:
                # Bounded by the collector's limit: acknowledged now, so the client keeps
                # sending until the filter can decide.
                self.conns[CLIENT].acknowledge_received_data(item.ack[2], event.stream_id)
                item.ack = None
            exchange.waiting.append(item)
            if not collector.add(item.data):
                self._decide(exchange, None)
            return
        if item.end:
            exchange.request_ended = True  # its last frame carries END_STREAM
        self._to_upstream(exchange, item)

    def _client_stream_ended(self, stream_id: int) -> None:
        exchange = self.exchanges.get(stream_id)
        if exchange is None or exchange.request_ended:
            return  # unknown, or ended with its head (a request without body)
        exchange.request_ended = True
        if exchange.side is None and exchange.collector is not None:
            last = exchange.waiting[-1] if exchange.waiting else None
            if last is not None and last.headers is not None:
                last.end = True  # trailers carry END_STREAM
            else:
                exchange.waiting.append(_Item(end=True))
            exchange.collector.finish()
            self._decide(exchange, exchange.collector.body)
            return
        self._to_upstream(exchange, _Item(end=True))

    def _on_upstream_event(self, side: str, event: Any) -> None:
        stream_id = getattr(event, "stream_id", None)
        exchange = self.by_upstream.get((side, stream_id)) if stream_id else None
        if isinstance(event, h2.events.ResponseReceived | h2.events.InformationalResponseReceived):
            if exchange is not None:
                final = isinstance(event, h2.events.ResponseReceived)
                exchange.responded = exchange.responded or final
                ended = final and event.stream_ended is not None
                exchange.response_ended = exchange.response_ended or ended
                self._queue(
                    CLIENT, exchange.client_id, _Item(headers=list(event.headers), end=ended)
                )
        elif isinstance(event, h2.events.DataReceived):
            if exchange is None:
                self.conns[side].acknowledge_received_data(event.flow_controlled_length, stream_id)
                return
            ack = (side, event.stream_id, event.flow_controlled_length)
            # The last DATA carries END_STREAM on the client's side too (not one more frame).
            ended = event.stream_ended is not None and not exchange.response_ended
            exchange.response_ended = exchange.response_ended or ended
            self._queue(CLIENT, exchange.client_id, _Item(data=event.data, end=ended, ack=ack))
        elif isinstance(event, h2.events.TrailersReceived):
            if exchange is not None:
                exchange.response_ended = True
                self._queue(
                    CLIENT, exchange.client_id, _Item(headers=list(event.headers), end=True)
                )
        elif isinstance(event, h2.events.StreamEnded):
            if exchange is not None and not exchange.response_ended:
                exchange.response_ended = True
                self._queue(CLIENT, exchange.client_id, _Item(end=True))
            self._upstream_stream_done(side, stream_id)
        elif isinstance(event, h2.events.StreamReset):
            if exchange is not None:
                self.by_upstream.pop((side, event.stream_id), None)
                self._reset(CLIENT, exchange.client_id, event.error_code)
                self.exchanges.pop(exchange.client_id, None)
            self._open_held(side)
        elif isinstance(event, h2.events.WindowUpdated):
            self._flush_window(side, event.stream_id)
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self._open_held(side)
        elif isinstance(event, h2.events.ConnectionTerminated):
            # A GOAWAY: h2 sends nothing more on it. Unfinished streams fail as on a close;
            # new ones open a new connection.
            self.closed(side)

    def _upstream_stream_done(self, side: str, stream_id: int) -> None:
        exchange = self.by_upstream.get((side, stream_id))
        if exchange is not None:
            conn = self.conns.get(side)
            if conn is not None and _closed(conn, stream_id):
                self.by_upstream.pop((side, stream_id), None)
        self._open_held(side)

    # -- routing -------------------------------------------------------------------------------
    def _decide(self, exchange: Exchange, body: bytes | None) -> None:
        side = self.routes.choose(exchange.head, body)
        if side in self.gone and side != TARGET:
            side = TARGET  # the program's session is gone: the target answers, as before
        self._route(exchange, side)

    def _route(self, exchange: Exchange, side: str) -> None:
        if side in self.gone:
            self._fail(exchange, b"the original destination cannot be reached\n")
            return
        exchange.side = side
        self.routed.append(side)
        self.held[side].append(exchange)
        self._open_held(side)

    def _open_held(self, side: str) -> None:
        conn = self.conns.get(side)
        if conn is None:
            return
        held = self.held[side]
        while held and conn.open_outbound_streams < conn.remote_settings.max_concurrent_streams:
            exchange = held.popleft()
            if exchange.client_id not in self.exchanges:
                continue  # the client reset it meanwhile
            stream_id = conn.get_next_available_stream_id()
            exchange.upstream_id = stream_id
            self.by_upstream[(side, stream_id)] = exchange
            first = exchange.waiting[0] if len(exchange.waiting) == 1 else None
            # A request without body: its HEADERS frame ends the stream.
            ends = first is not None and first.end and not first.data and first.headers is None
            conn.send_headers(stream_id, exchange.headers, end_stream=ends)
            waiting, exchange.waiting = exchange.waiting, []
            if not ends:
                for item in waiting:
                    self._queue(side, stream_id, item)

    def _to_upstream(self, exchange: Exchange, item: _Item) -> None:
        if exchange.upstream_id is None or exchange.side is None:
            exchange.waiting.append(item)
        else:
            self._queue(exchange.side, exchange.upstream_id, item)

    def _fail(self, exchange: Exchange, why: bytes) -> None:
        """A 502 when nothing was answered yet, else the stream is reset."""
        exchange.finished = True
        client = self.conns[CLIENT]
        self.exchanges.pop(exchange.client_id, None)
        self.outbox.pop((CLIENT, exchange.client_id), None)
        if _closed(client, exchange.client_id):
            return
        try:
            if exchange.responded:
                client.reset_stream(exchange.client_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
                return
            headers = [(b":status", b"502"), (b"content-length", str(len(why)).encode())]
            client.send_headers(exchange.client_id, headers)
            self._queue(CLIENT, exchange.client_id, _Item(data=why, end=True))
        except h2.exceptions.ProtocolError:
            pass

    # -- sending with flow control ----------------------------------------------------------
    def _queue(self, endpoint: str, stream_id: int, item: _Item) -> None:
        box = self.outbox.setdefault((endpoint, stream_id), deque())
        box.append(item)
        self._flush(endpoint, stream_id)

    def _flush_window(self, endpoint: str, stream_id: int) -> None:
        if stream_id:
            self._flush(endpoint, stream_id)
            return
        for key in [key for key in self.outbox if key[0] == endpoint]:
            self._flush(*key)

    def _flush(self, endpoint: str, stream_id: int) -> None:
        conn = self.conns.get(endpoint)
        box = self.outbox.get((endpoint, stream_id))
        if conn is None or box is None:
            return
        try:
            while box:
                item = box[0]
                if item.headers is not None:
                    conn.send_headers(stream_id, item.headers, end_stream=item.end)
                elif item.data:
                    window = conn.local_flow_control_window(stream_id)
                    size = min(window, conn.max_outbound_frame_size, len(item.data))
                    if size <= 0:
                        return
                    last = size == len(item.data)
                    conn.send_data(stream_id, item.data[:size], end_stream=item.end and last)
                    if not last:
                        item.data = item.data[size:]
                        continue
                elif item.end:
                    conn.end_stream(stream_id)
                box.popleft()
                if item.ack is not None:
                    self._acknowledge(*item.ack)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            box.clear()
        if not box:
            del self.outbox[(endpoint, stream_id)]
            if endpoint == CLIENT and _closed(conn, stream_id):
                self._client_stream_done(stream_id)

    def _acknowledge(self, endpoint: str, stream_id: int, length: int) -> None:
        conn = self.conns.get(endpoint)
        if conn is not None and length:
            conn.acknowledge_received_data(length, stream_id)

    def _client_stream_done(self, stream_id: int) -> None:
        exchange = self.exchanges.pop(stream_id, None)
        if exchange is not None:
            exchange.finished = True

    def _reset(self, endpoint: str, stream_id: int, code: int) -> None:
        self.outbox.pop((endpoint, stream_id), None)
        conn = self.conns.get(endpoint)
        if conn is None or _closed(conn, stream_id):
            return
        with contextlib.suppress(h2.exceptions.ProtocolError):
            conn.reset_stream(stream_id, code)


def _closed(conn: h2.connection.H2Connection, stream_id: int) -> bool:
    stream = conn.streams.get(stream_id)
    return stream is None or stream.closed
