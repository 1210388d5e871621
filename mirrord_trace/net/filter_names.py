"""The addresses of the host names an outgoing filter names, resolved on the filter's side.

As in mirrord: the host names of a `remote` filter are resolved the way the target resolves
them (the agent's dns.getaddrinfo: the target's /etc/hosts, resolv.conf and search domains,
so `db` finds the cluster's service), those of a `local` filter the way this machine does. A
connection to one of those addresses matches the entry even when the program never resolved
the name itself (it had the address from elsewhere, or resolved another alias).

Answers are kept for TTL seconds (failures for FAILED_TTL), so a connect costs a lookup at most
once per name per TTL; a name that does not resolve matches by name only.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from mirrord_trace.net.sockaddr import IPAddress

TTL = 30.0
FAILED_TTL = 5.0
LOOKUP_TIMEOUT = 5.0


def local_lookup(name: str) -> frozenset[IPAddress]:
    """This machine's resolver (getaddrinfo: /etc/hosts, then DNS)."""
    try:
        answers = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return frozenset()
    return frozenset(ipaddress.ip_address(answer[4][0].split("%", 1)[0]) for answer in answers)


def remote_lookup(client: Any) -> Callable[[str], frozenset[IPAddress]]:
    """The target's resolver, through the agent."""

    def lookup(name: str) -> frozenset[IPAddress]:
        try:
            reply = client.request(
                "dns.getaddrinfo",
                host=name,
                family=0,
                timeout=LOOKUP_TIMEOUT,
            )
        except Exception:  # the agent's errors (no such name, no answer, agent gone)
            return frozenset()
        found = set()
        for entry in reply.get("addresses", ()):
            try:
                found.add(ipaddress.ip_address(entry["address"]))
            except (KeyError, ValueError):
                continue
        return frozenset(found)

    return lookup


class FilterNames:
    """name -> its addresses on the filter's side, cached."""

    def __init__(
        self,
        lookup: Callable[[str], frozenset[IPAddress]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._clock = clock
        self._cache: dict[str, tuple[float, frozenset[IPAddress]]] = {}
        self._lock = threading.Lock()

    def addresses(self, name: str) -> frozenset[IPAddress]:
        now = self._clock()
        with self._lock:
            cached = self._cache.get(name)
        if cached is not None and cached[0] > now:
            return cached[1]
        found = self._lookup(name)
        with self._lock:
            self._cache[name] = (now + (TTL if found else FAILED_TTL), found)
        return found
