"""Where a stolen port's requests go: to the first subscriber whose filter matches, else to the
target (the connection's original destination).

Each subscriber is a `side` with its filter and an opener for connections to its program.
The steal hub gives a port one subscriber today (a second session's steal is refused, as
mirrord's `on_concurrent_steal: abort`); the routers take any number, first match first. The
sides are fixed for a connection when it is accepted; a subscriber that left meanwhile cannot
be opened, and its requests go to the target.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from agent.http.filter import Filter, RequestHead
from agent.http.relay import Opener

TARGET = "target"
PROGRAM = "program"  # the side of a port's only subscriber


@dataclass(frozen=True)
class Routes:
    programs: tuple[tuple[str, Filter], ...]  # (side, filter), in subscription order
    openers: Mapping[str, Opener]  # every side's, and TARGET's

    @classmethod
    def single(cls, http_filter: Filter, open_program: Opener, open_target: Opener) -> Routes:
        return cls(((PROGRAM, http_filter),), {PROGRAM: open_program, TARGET: open_target})

    @property
    def needs_body(self) -> bool:
        return any(flt.needs_body for _, flt in self.programs)

    def choose(self, head: RequestHead, body: bytes | None) -> str:
        for side, flt in self.programs:
            if flt.matches(head, body):
                return side
        return TARGET
