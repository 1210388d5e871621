"""Where a destination goes: through the target (remote), from this machine (local), or to
the DNS relay. Pure decisions over the configuration; no I/O.

The rules, in order:
1. Port 53 is DNS: with remote DNS on, queries to any nameserver that is not on loopback go to
   the DNS relay (which decides per query, by the DNS filter); with it off, queries to one of
   the target's nameservers go to the relay too, which hands them all to the host's resolver
   (the program may have read the target's resolv.conf).
2. Loopback destinations stay local, unless `ignore_localhost` is false and the remote filter
   names a loopback address or `localhost` explicitly.
3. `tcp: false` / `udp: false` keep that protocol local.
4. The filter: `remote` sends only matches through the target, `local` keeps matches local.
   Host-name entries match the names the program resolved to the address, and the addresses
   the name has on the filter's side (`filter_addresses`, see mirrord_trace.net.filter_names).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from mirrord_trace.config.filters import AddressFilter, Protocol
from mirrord_trace.config.model import DnsConfig, FilterSide, OutgoingConfig
from mirrord_trace.net.names import ResolvedNames
from mirrord_trace.net.sockaddr import InetAddress, IPAddress

DNS_PORT = 53


class Route(StrEnum):
    LOCAL = "local"
    REMOTE = "remote"
    DNS = "dns"


@dataclass(frozen=True, slots=True)
class Decision:
    route: Route
    why: str


def _names_loopback(entry: AddressFilter) -> bool:
    host = entry.host
    if isinstance(host, str):
        return host == "localhost"
    if isinstance(host, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return host.prefixlen > 0 and host.network_address.is_loopback
    return host is not None and host.is_loopback


class OutgoingPolicy:
    def __init__(
        self,
        outgoing: OutgoingConfig,
        dns: DnsConfig,
        names: ResolvedNames | None = None,
        target_nameservers: Callable[[], frozenset[IPAddress]] = frozenset,
        filter_addresses: Callable[[str], frozenset[IPAddress]] | None = None,
    ) -> None:
        self.outgoing = outgoing
        self.dns = dns
        self.names = names if names is not None else ResolvedNames()
        self._target_nameservers = target_nameservers
        entries = outgoing.filter.entries if outgoing.filter is not None else ()
        self._remote_filter = (
            outgoing.filter is not None and outgoing.filter.side is FilterSide.REMOTE
        )
        self._entries = entries
        self._loopback_entries = tuple(
            e for e in entries if self._remote_filter and _names_loopback(e)
        )
        self.uses_host_names = any(isinstance(e.host, str) for e in entries)
        self._filter_addresses = filter_addresses

    @property
    def active(self) -> bool:
        """Whether anything at all can leave through the target or the DNS relay."""
        return self.outgoing.tcp or self.outgoing.udp or self.dns.enabled

    def decide(self, protocol: Protocol, destination: InetAddress) -> Decision:
        ip, port = destination.ip, destination.port
        if port == DNS_PORT:
            if self.dns.enabled and not ip.is_loopback:
                return Decision(Route.DNS, "dns: a query for the DNS relay (remote DNS)")
            if not self.dns.enabled and ip in self._target_nameservers():
                return Decision(Route.DNS, "dns: remote DNS is off, the host's resolver answers")
        if (ip.is_loopback or ip.is_unspecified) and not self._loopback_configured(
            protocol, destination
        ):
            return Decision(Route.LOCAL, "local: loopback stays local")
        if protocol is Protocol.TCP and not self.outgoing.tcp:
            return Decision(Route.LOCAL, "local: outgoing tcp is off")
        if protocol is Protocol.UDP and not self.outgoing.udp:
            return Decision(Route.LOCAL, "local: outgoing udp is off")
        if self.outgoing.filter is None:
            return Decision(Route.REMOTE, "remote: through the target")
        matched = self._matching_entry(protocol, destination)
        if self._remote_filter:
            if matched is None:
                return Decision(Route.LOCAL, "local: not in the remote filter")
            return Decision(Route.REMOTE, f"remote: filter entry {matched}")
        if matched is None:
            return Decision(Route.REMOTE, "remote: not in the local filter")
        return Decision(Route.LOCAL, f"local: filter entry {matched}")

    def _loopback_configured(self, protocol: Protocol, destination: InetAddress) -> bool:
        if self.outgoing.ignore_localhost:
            return False
        for entry in self._loopback_entries:
            name = "localhost" if isinstance(entry.host, str) else None
            if entry.matches(protocol, destination.ip, destination.port, name):
                return True
        return False

    def _matching_entry(self, protocol: Protocol, destination: InetAddress) -> AddressFilter | None:
        names: tuple[str | None, ...] = (None,)
        if self.uses_host_names:
            names = self.names.names_for(destination.ip) or (None,)
            if destination.ip.is_loopback:
                names = (*names, "localhost")
        for entry in self._entries:
            for name in names:
                if entry.matches(protocol, destination.ip, destination.port, name):
                    return entry
            if (
                isinstance(entry.host, str)
                and self._filter_addresses is not None
                and entry.matches(protocol, destination.ip, destination.port, entry.host)
                and destination.ip in self._filter_addresses(entry.host)
            ):
                return entry
        return None
