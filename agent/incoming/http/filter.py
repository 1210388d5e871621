"""Which stolen HTTP requests go to the program (mirrord's `http_filter` semantics).

- header_filter: a regex searched, case-insensitively, in each header written `Name: value`
  (the name as the client spelled it); one matching header is enough.
- path_filter: a regex searched, case-insensitively, in the request's path without its query
  and in the path with its query; either matching is enough.
- both given: a request must match both.

Regexes use Python's `re` syntax (mirrord uses Rust's fancy-regex: the common subset,
including look-around, is the same).
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterable
from dataclasses import dataclass

from mirrord_trace.protocol.requests import InvalidRequest


@dataclass(frozen=True)
class HttpFilter:
    header: re.Pattern[str] | None = None
    path: re.Pattern[str] | None = None

    @classmethod
    def from_fields(cls, header_filter: str, path_filter: str) -> HttpFilter | None:
        """The filter of an incoming.subscribe request; None when neither regex is given."""
        if not header_filter and not path_filter:
            return None
        return cls(
            _compile(header_filter, "header_filter") if header_filter else None,
            _compile(path_filter, "path_filter") if path_filter else None,
        )

    def matches(self, target: bytes, headers: Iterable[tuple[bytes, bytes]]) -> bool:
        """Whether a request for `target` (as on the request line) with these headers (raw
        name spelling, in order) goes to the program."""
        if self.path is not None:
            full = target.decode("latin-1")
            path = full.split("?", 1)[0]
            if not (self.path.search(path) or self.path.search(full)):
                return False
        if self.header is not None:
            pattern = self.header
            return any(
                pattern.search(f"{name.decode('latin-1')}: {value.decode('latin-1')}")
                for name, value in headers
            )
        return True


def _compile(source: str, name: str) -> re.Pattern[str]:
    try:
        return re.compile(source, re.IGNORECASE)
    except re.error as error:
        raise InvalidRequest(errno.EINVAL, f"{name} {source!r} is not a regex: {error}") from None
