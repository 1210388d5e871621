"""Which stolen HTTP requests go to the program: mirrord 3.250's `http_filter`, as a tree.

The wire form (the `http_filter` field of incoming.subscribe) is a tree of one-key mappings,
the shapes of mirrord's configuration:

    {"header": REGEX}   a header, written `Name: value`, matches (one is enough)
    {"path": REGEX}     the path without its query, or the path with it, matches
    {"method": NAME}    the method is NAME, compared case-insensitively
    {"body": "json", "query": JSONPATH, "matches": REGEX}
                        the body is JSON and one node the RFC 9535 query selects, as a string
                        (other values in compact JSON), matches
    {"all_of": [...]}   every inner filter matches
    {"any_of": [...]}   at least one does

Regexes are searched (not anchored) case-insensitively, except a body filter's `matches`,
which is case-sensitive as in mirrord. mirrord compiles them with fancy-regex; Python's `re`
has the same look-around (`^User-Agent: (?!kube-probe)`), back-references and classes for
what filters use.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.http.body import JsonBodyQuery
from mirrord_trace.protocol.requests import InvalidRequest


@dataclass(frozen=True, slots=True)
class RequestHead:
    """What the filter sees of a request: the same for HTTP/1.x and HTTP/2.

    `target` is the path with its query (HTTP/1's request target, HTTP/2's :path); `headers`
    are the regular headers as the client spelled them (HTTP/2's pseudo-headers are not
    headers, as in mirrord)."""

    method: bytes
    target: bytes
    headers: tuple[tuple[bytes, bytes], ...]

    @classmethod
    def of(
        cls, method: bytes, target: bytes, headers: Iterable[tuple[bytes, bytes]]
    ) -> RequestHead:
        return cls(method, target, tuple(headers))

    def header_lines(self) -> list[str]:
        return [f"{n.decode('latin-1')}: {v.decode('latin-1')}" for n, v in self.headers]


class Filter:
    """One node of the filter tree."""

    needs_body = False

    def matches(self, head: RequestHead, body: bytes | None) -> bool:
        """`body` is the whole body when `needs_body` and it fitted the bound, else None."""
        raise NotImplementedError


@dataclass(frozen=True)
class HeaderFilter(Filter):
    pattern: re.Pattern[str]

    def matches(self, head: RequestHead, body: bytes | None) -> bool:
        return any(self.pattern.search(line) for line in head.header_lines())


@dataclass(frozen=True)
class PathFilter(Filter):
    pattern: re.Pattern[str]

    def matches(self, head: RequestHead, body: bytes | None) -> bool:
        full = head.target.decode("latin-1")
        path = full.split("?", 1)[0]
        return bool(self.pattern.search(path) or self.pattern.search(full))


@dataclass(frozen=True)
class MethodFilter(Filter):
    method: bytes  # upper case

    def matches(self, head: RequestHead, body: bytes | None) -> bool:
        return head.method.upper() == self.method


@dataclass(frozen=True)
class JsonBodyFilter(Filter):
    query: JsonBodyQuery
    needs_body = True

    def matches(self, head: RequestHead, body: bytes | None) -> bool:
        return body is not None and self.query.matches(body)


@dataclass(frozen=True)
class AllOf(Filter):
    filters: tuple[Filter, ...]

    @property
    def needs_body(self) -> bool:  # type: ignore[override]
        return any(inner.needs_body for inner in self.filters)

    def matches(self, head: RequestHead, body: bytes | None) -> bool:
        return all(inner.matches(head, body) for inner in self.filters)


@dataclass(frozen=True)
class AnyOf(Filter):
    filters: tuple[Filter, ...]

    @property
    def needs_body(self) -> bool:  # type: ignore[override]
        return any(inner.needs_body for inner in self.filters)

    def matches(self, head: RequestHead, body: bytes | None) -> bool:
        return any(inner.matches(head, body) for inner in self.filters)


def _invalid(where: str, what: str) -> InvalidRequest:
    return InvalidRequest(errno.EINVAL, f"http_filter {where.rstrip('.')}: {what}")


def _regex(source: object, where: str, flags: int = re.IGNORECASE) -> re.Pattern[str]:
    if not isinstance(source, str) or not source:
        raise _invalid(where, "a non-empty regex string is needed")
    try:
        return re.compile(source, flags)
    except re.error as error:
        raise _invalid(where, f"{source!r} is not a regex: {error}") from None


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def parse_filter(wire: object, where: str = "") -> Filter:
    """The filter a wire-form tree describes; InvalidRequest(EINVAL) naming the bad part."""
    if not isinstance(wire, Mapping):
        raise _invalid(where or "(top)", "each filter is a mapping")
    keys = set(wire)
    if keys == {"header"}:
        return HeaderFilter(_regex(wire["header"], f"{where}header"))
    if keys == {"path"}:
        return PathFilter(_regex(wire["path"], f"{where}path"))
    if keys == {"method"}:
        method = wire["method"]
        if not isinstance(method, str) or not _TOKEN.fullmatch(method):
            raise _invalid(f"{where}method", f"{method!r} is not an HTTP method name")
        return MethodFilter(method.upper().encode("ascii"))
    if "body" in keys:
        if wire["body"] != "json" or keys != {"body", "query", "matches"}:
            raise _invalid(
                f"{where}body", 'write {"body": "json", "query": JSONPATH, "matches": REGEX}'
            )
        query = JsonBodyQuery.parse(
            wire["query"], _regex(wire["matches"], f"{where}body.matches", 0), f"{where}body"
        )
        return JsonBodyFilter(query)
    for name, kind in (("all_of", AllOf), ("any_of", AnyOf)):
        if keys == {name}:
            inner = wire[name]
            if not isinstance(inner, list | tuple) or not inner:
                raise _invalid(f"{where}{name}", "a non-empty list of filters is needed")
            return kind(
                tuple(parse_filter(item, f"{where}{name}[{n}].") for n, item in enumerate(inner))
            )
    raise _invalid(
        where or "(top)",
        f"unknown filter {sorted(keys)}: one of header, path, method, body, all_of, any_of",
    )


def from_subscribe_fields(fields: Mapping[str, Any]) -> Filter | None:
    """The filter of an incoming.subscribe request (its `http_filter` tree, or the older
    `header_filter` / `path_filter` strings, which must both match); None for no filter."""
    parts: list[Filter] = []
    if fields.get("http_filter"):
        parts.append(parse_filter(fields["http_filter"]))
    if fields.get("header_filter"):
        parts.append(HeaderFilter(_regex(fields["header_filter"], "header_filter")))
    if fields.get("path_filter"):
        parts.append(PathFilter(_regex(fields["path_filter"], "path_filter")))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else AllOf(tuple(parts))
