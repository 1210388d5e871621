"""Request bodies for body filters: a bounded collector and the JSON query.

A body filter needs the whole body before it can decide. The body is collected up to
MAX_BODY_BUFFER bytes (MIRRORD_TRACE_MAX_BODY_BUFFER_SIZE, default 64 KiB, mirrord's knob)
and for at most MAX_BODY_BUFFER_TIMEOUT seconds (MIRRORD_TRACE_MAX_BODY_BUFFER_TIMEOUT in
milliseconds, default 1000, mirrord's); a body longer than that, announced longer by its
Content-Length, or slower (a streaming call that waits for an answer before it sends more)
does not match the body filter: what was collected is forwarded first, then the rest as it
comes. Nothing waits for an unbounded or unending body.

The JSON query is RFC 9535 JSONPath with mirrord's `typeof` (mirrord_trace.protocol.jsonpath).
"""

from __future__ import annotations

import errno
import json
import os
import re
from dataclasses import dataclass

from mirrord_trace.protocol.jsonpath import JSONPathError, JSONPathQuery, compile_query
from mirrord_trace.protocol.requests import InvalidRequest


def _max_body_buffer() -> int:
    raw = os.environ.get("MIRRORD_TRACE_MAX_BODY_BUFFER_SIZE", "")
    return int(raw) if raw.isdigit() else 64 * 1024


def _max_body_buffer_timeout() -> float:
    raw = os.environ.get("MIRRORD_TRACE_MAX_BODY_BUFFER_TIMEOUT", "")
    return (int(raw) if raw.isdigit() else 1000) / 1000


MAX_BODY_BUFFER = _max_body_buffer()
MAX_BODY_BUFFER_TIMEOUT = _max_body_buffer_timeout()


def collect_timeout() -> float:
    """Seconds a body filter waits for a body (read when a collection starts)."""
    return MAX_BODY_BUFFER_TIMEOUT


@dataclass(frozen=True)
class JsonBodyQuery:
    """`{"body": "json", "query": ..., "matches": ...}`."""

    source: str
    query: JSONPathQuery
    pattern: re.Pattern[str]

    @classmethod
    def parse(cls, query: object, pattern: re.Pattern[str], where: str) -> JsonBodyQuery:
        if not isinstance(query, str):
            raise InvalidRequest(errno.EINVAL, f"http_filter {where}.query: a JSONPath string")
        try:
            compiled = compile_query(query)
        except JSONPathError as error:
            raise InvalidRequest(
                errno.EINVAL,
                f"http_filter {where}.query {query!r} is not RFC 9535 JSONPath: {error}",
            ) from None
        return cls(query, compiled, pattern)

    def matches(self, body: bytes) -> bool:
        """One selected node, as a string (others in compact JSON), matches the regex."""
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            return False
        try:
            nodes = self.query.find(document)
        except (JSONPathError, RecursionError):
            return False
        for node in nodes:
            value = node.value
            text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
            if self.pattern.search(text):
                return True
        return False


class BodyCollector:
    """Collects a request body for a body filter, never past `limit` bytes.

    `add` returns False once the body is known not to fit (then `chunks` holds what came so
    far, to forward as it is); `complete` is set when the whole body fitted."""

    def __init__(self, announced: int | None, limit: int = MAX_BODY_BUFFER) -> None:
        self.limit = limit
        self.chunks: list[bytes] = []
        self.size = 0
        self.complete = False
        self.too_big = announced is not None and announced > limit

    def add(self, data: bytes) -> bool:
        self.chunks.append(data)
        self.size += len(data)
        if self.size > self.limit:
            self.too_big = True
        return not self.too_big

    def finish(self) -> None:
        self.complete = not self.too_big

    @property
    def body(self) -> bytes | None:
        """The whole body when it fitted, for the filter; None otherwise."""
        return b"".join(self.chunks) if self.complete else None
