"""DNS decisions: which queries the target's nameserver answers and which the host's.

Pure logic over DNS messages, parsed with scapy's DNS layer. scapy takes about a second to
import, so it is imported only when a decision needs a message's content (a DNS filter, or
outgoing filters that name hosts), and then in the background as soon as the run starts.

Filter entries (`[HOST][/PREFIX][:PORT]`) match a query by its name (case-insensitively,
without the trailing dot); an address or subnet entry matches reverse lookups
(`4.3.2.1.in-addr.arpa`) of its addresses; a port is compared with the nameserver's port.
"""

from __future__ import annotations

import ipaddress
import threading
from typing import TYPE_CHECKING

from mirrord_trace.config.filters import Protocol
from mirrord_trace.config.model import DnsConfig, FilterSide
from mirrord_trace.net.names import normal_name
from mirrord_trace.net.sockaddr import IPAddress

if TYPE_CHECKING:
    from scapy.layers.dns import DNS

_TYPE_A, _TYPE_AAAA = 1, 28
_parser_ready = threading.Event()


def _dns_layer() -> type[DNS]:
    from scapy.layers.dns import DNS

    _parser_ready.set()
    return DNS


def prepare_parser() -> None:
    """Import scapy's DNS layer in the background, so the first query does not wait for it."""
    if not _parser_ready.is_set():
        threading.Thread(target=_dns_layer, name="mirrord-trace-scapy", daemon=True).start()


def query_name(message: bytes) -> str | None:
    """The name a DNS query asks about, or None if it is no query scapy can read."""
    try:
        questions = _dns_layer()(message).qd
    except Exception:  # scapy raises many kinds of errors for malformed input
        return None
    if not questions:
        return None
    return normal_name(questions[0].qname.decode(errors="replace"))


def answered_addresses(message: bytes) -> list[tuple[str, IPAddress]]:
    """(name, address) of every A/AAAA record in a reply, and the queried name for each
    address, so that a name reached through a CNAME chain is known by what was asked."""
    try:
        reply = _dns_layer()(message)
    except Exception:
        return []
    asked = normal_name(reply.qd[0].qname.decode(errors="replace")) if reply.qd else None
    found: list[tuple[str, IPAddress]] = []
    for record in reply.an or []:
        if record.type not in (_TYPE_A, _TYPE_AAAA):
            continue
        try:
            address = ipaddress.ip_address(str(record.rdata))
        except ValueError:
            continue
        found.append((normal_name(record.rrname.decode(errors="replace")), address))
        if asked is not None:
            found.append((asked, address))
    return found


def reverse_pointer_address(name: str) -> IPAddress | None:
    """1.2.3.4 for "4.3.2.1.in-addr.arpa" (and the ip6.arpa form); None for other names."""
    labels = normal_name(name).split(".")
    try:
        if labels[-2:] == ["in-addr", "arpa"] and len(labels) == 6:
            return ipaddress.IPv4Address(".".join(reversed(labels[:4])))
        if labels[-2:] == ["ip6", "arpa"] and len(labels) == 34:
            nibbles = "".join(reversed(labels[:32]))
            return ipaddress.IPv6Address(int(nibbles, 16))
    except ValueError:
        return None
    return None


class DnsQueryRouter:
    """Decides, per query, whether the target's nameserver answers it (remote) or the host's."""

    def __init__(self, dns: DnsConfig) -> None:
        self.enabled = dns.enabled
        self.filter = dns.filter if dns.enabled else None

    @property
    def reads_queries(self) -> bool:
        return self.filter is not None

    def decide(self, query: bytes, server_port: int) -> tuple[bool, str]:
        """(remote?, why)."""
        if not self.enabled:
            return False, "local: remote DNS is off"
        if self.filter is None:
            return True, "remote: the target's nameserver"
        name = query_name(query)
        address = reverse_pointer_address(name) if name is not None else None
        matched = next(
            (
                entry
                for entry in self.filter.entries
                if entry.matches(Protocol.ANY, address, server_port, name)
            ),
            None,
        )
        if self.filter.side is FilterSide.REMOTE:
            if matched is None:
                return False, f"local: {name} is not in the DNS remote filter"
            return True, f"remote: DNS filter entry {matched}"
        if matched is None:
            return True, f"remote: {name} is not in the DNS local filter"
        return False, f"local: DNS filter entry {matched}"
