"""HTTP/1.x messages read and written for the filtered steal: httptools (llhttp, the parser of
Node.js) finds the messages' heads and bodies in the bytes; this module turns its callbacks
into events and writes messages out again, each hop framing its own.

Events, in order, for each message: a Head, Body(data)..., then END. EOF when the peer closed
between messages (or, for a close-delimited response body, the END of that body). A request
that upgrades (WebSocket, h2c) ends its head with `rest`: the bytes after it, which belong to
the next protocol.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

import httptools

READ_SIZE = 256 * 1024
# Hop-by-hop headers stay on their hop (RFC 9110 7.6.1); framing is each hop's own.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"upgrade",
        b"expect",
        b"transfer-encoding",
        b"content-length",
    }
)


class ProtocolError(Exception):
    """The peer's bytes are not HTTP/1.x."""


@dataclass(slots=True)
class Head:
    """A request's or a response's head. `length` is the Content-Length (None: none given),
    `chunked` whether the body is chunked; a response with neither has a close-delimited
    body (`until_close`)."""

    headers: list[tuple[bytes, bytes]]
    version: str
    keep_alive: bool
    method: bytes = b""
    target: bytes = b""
    status: int = 0
    reason: bytes = b""
    length: int | None = None
    chunked: bool = False
    until_close: bool = False
    bodiless: bool = False  # a response that has no body whatever its headers say (HEAD's)
    upgrade: bool = False
    rest: bytes = b""  # after an upgrade: what followed the head

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.length) or self.until_close


@dataclass(slots=True)
class Body:
    data: bytes


END = "end"
EOF = "eof"


@dataclass
class _Collector:
    """httptools' callbacks -> events."""

    events: deque[Head | Body | str] = field(default_factory=deque)
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    url: bytes = b""
    reason: bytes = b""
    parser: httptools.HttpRequestParser | httptools.HttpResponseParser | None = None
    head: Head | None = None
    skip_body: bool = False  # the response to a HEAD request

    def on_message_begin(self) -> None:
        self.headers = []
        self.url = b""
        self.reason = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        assert parser is not None
        length: int | None = None
        chunked = False
        for name, value in self.headers:
            lowered = name.lower()
            if lowered == b"content-length" and value.strip().isdigit():
                length = int(value)
            elif lowered == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        head = Head(
            self.headers,
            parser.get_http_version(),
            parser.should_keep_alive(),
            length=length,
            chunked=chunked,
            upgrade=parser.should_upgrade(),
        )
        if isinstance(parser, httptools.HttpRequestParser):
            head.method = parser.get_method()
            head.target = self.url
        else:
            head.status = parser.get_status_code()
            head.reason = self.reason
            bodiless = self.skip_body or head.status < 200 or head.status in (204, 304)
            head.until_close = not bodiless and length is None and not chunked
            head.bodiless = bodiless
        self.head = head
        self.events.append(head)
        if self.skip_body and head.status >= 200:
            # llhttp cannot be told that a HEAD's response has no body: the message ends
            # here, and the connection is not reused (the parser would wait for the body).
            head.keep_alive = False
            self.events.append(END)

    def on_body(self, body: bytes) -> None:
        self.events.append(Body(body))

    def on_message_complete(self) -> None:
        if not (self.skip_body and self.head is not None and self.head.status >= 200):
            self.events.append(END)


class MessageReader:
    """Reads requests (client side) or responses (upstream side) off a stream."""

    def __init__(self, reader: asyncio.StreamReader, requests: bool, first: bytes = b"") -> None:
        self.reader = reader
        self.collector = _Collector()
        kind = httptools.HttpRequestParser if requests else httptools.HttpResponseParser
        self.parser = kind(self.collector)
        self.collector.parser = self.parser
        self.pending = first
        self.upgraded = False
        self.closed = False
        self.error: ProtocolError | None = None  # raised once the events before it are read

    @property
    def has_events(self) -> bool:
        """Whether next() has an event without reading."""
        return bool(self.collector.events)

    def expect_head_response(self, yes: bool) -> None:
        self.collector.skip_body = yes

    async def next(self) -> Head | Body | str:
        events = self.collector.events
        while not events:
            if self.error is not None:
                raise self.error
            if self.closed or self.upgraded:
                return EOF
            data = self.pending or await self.reader.read(READ_SIZE)
            self.pending = b""
            if not data:
                self.closed = True
                head = self.collector.head
                if head is not None and head.until_close:
                    events.append(END)  # a close-delimited body ends with the connection
                    continue
                return EOF
            self._feed(data)
        return events.popleft()

    def _feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            offset = int(upgrade.args[0]) if upgrade.args else len(data)
            self.upgraded = True
            if self.collector.head is not None:
                self.collector.head.rest = data[offset:]
        except httptools.HttpParserError as error:
            self.error = ProtocolError(str(error))


def _head_lines(start: bytes, headers: list[tuple[bytes, bytes]], extra: list[bytes]) -> bytes:
    parts = [start]
    for name, value in headers:
        parts.append(name + b": " + value + b"\r\n")
    parts.extend(extra)
    parts.append(b"\r\n")
    return b"".join(parts)


def end_to_end(headers: list[tuple[bytes, bytes]], keep_upgrade: bool) -> list[tuple[bytes, bytes]]:
    """The headers without the hop-by-hop ones (Connection/Upgrade kept for an upgrade)."""
    kept = []
    for name, value in headers:
        lowered = name.lower()
        if lowered in HOP_BY_HOP and not (keep_upgrade and lowered in (b"connection", b"upgrade")):
            continue
        kept.append((name, value))
    return kept


def request_bytes(head: Head) -> bytes:
    """The request head for an upstream: the client's version (an HTTP/1.0 request may have
    no Host, which 1.1 requires) and framing; keep-alive is each hop's own."""
    extra = []
    if head.chunked:
        extra.append(b"Transfer-Encoding: chunked\r\n")
    elif head.length is not None:
        extra.append(b"Content-Length: %d\r\n" % head.length)
    start = b"%s %s HTTP/%s\r\n" % (head.method, head.target, head.version.encode())
    return _head_lines(start, end_to_end(head.headers, head.upgrade), extra)


@dataclass(slots=True)
class Framing:
    """How a body is written on one hop."""

    chunked: bool
    close_after: bool = False


def response_bytes(head: Head, client: Head) -> tuple[bytes, Framing]:
    """The response head for the client and how its body is framed: the upstream's length
    when it gave one, else chunked for an HTTP/1.1 client, else until the connection closes."""
    extra = []
    framing = Framing(chunked=False)
    keep_alive = client.keep_alive
    if head.status == 101:
        return _head_lines(_status_line(head), end_to_end(head.headers, True), []), framing
    if head.bodiless:
        # What the headers announce (a HEAD's answer tells the GET's length) goes as it is.
        if head.length is not None:
            extra.append(b"Content-Length: %d\r\n" % head.length)
        elif head.chunked:
            extra.append(b"Transfer-Encoding: chunked\r\n")
    elif head.length is not None:
        extra.append(b"Content-Length: %d\r\n" % head.length)
    elif head.chunked or head.until_close:
        if client.version == "1.1":
            extra.append(b"Transfer-Encoding: chunked\r\n")
            framing.chunked = True
        else:
            keep_alive = False
    if not keep_alive:
        extra.append(b"Connection: close\r\n")
        framing.close_after = True
    elif client.version == "1.0":
        extra.append(b"Connection: keep-alive\r\n")
    return _head_lines(_status_line(head), end_to_end(head.headers, False), extra), framing


def _status_line(head: Head) -> bytes:
    reason = head.reason or b""
    return b"HTTP/1.1 %d %s\r\n" % (head.status, reason)


def body_bytes(data: bytes, chunked: bool) -> bytes:
    if not chunked:
        return data
    return b"%x\r\n" % len(data) + data + b"\r\n" if data else b""


def end_bytes(chunked: bool) -> bytes:
    return b"0\r\n\r\n" if chunked else b""


def error_response(status: int, reason: bytes, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
        % (status, reason, len(body))
        + body
    )
