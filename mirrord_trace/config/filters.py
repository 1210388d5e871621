"""Outgoing-traffic and DNS filter entries, parsed into typed values once, at load time.

Grammar (mirrord's): `[PROTOCOL://][HOST][/PREFIX][:PORT]` where PROTOCOL is tcp, udp or any,
HOST is a host name, an IPv4 address or a bracketed IPv6 address (`[::1]`), PREFIX turns the
address into a subnet, and a missing part means "any". Port 0 and the unspecified addresses
(0.0.0.0, ::) also mean "any", as in mirrord.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

FILTER_SYNTAX = "[tcp://|udp://][HOST|IP|[IPV6]][/PREFIX][:PORT]"
DNS_FILTER_SYNTAX = "[HOST|IP|[IPV6]][/PREFIX][:PORT]"

# RFC 1123 labels; underscores are tolerated because cluster names (SRV-style) use them.
_HOST_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


class FilterSyntaxError(ValueError):
    """The entry does not follow the filter grammar; the message says which part is wrong."""


class Protocol(StrEnum):
    ANY = "any"
    TCP = "tcp"
    UDP = "udp"


@dataclass(frozen=True, slots=True)
class AddressFilter:
    """One filter entry.

    `host` is None (any address), an IP address, an IP network, or a lower-case host name
    without a trailing dot. `port` is None for any port.
    """

    protocol: Protocol
    host: IPAddress | IPNetwork | str | None
    port: int | None

    def matches(
        self,
        protocol: Protocol,
        address: IPAddress | None,
        port: int | None,
        hostname: str | None = None,
    ) -> bool:
        """Does a connection (or DNS query) to `address`/`hostname`:`port` match this entry?

        A host-name entry matches when `hostname` (the name the program resolved, if known)
        is that name, compared case-insensitively.
        """
        if self.protocol is not Protocol.ANY and protocol is not self.protocol:
            return False
        if self.port is not None and port != self.port:
            return False
        host = self.host
        if host is None:
            return True
        if isinstance(host, str):
            return hostname is not None and hostname.lower().rstrip(".") == host
        if address is None:
            return False
        if isinstance(host, ipaddress.IPv4Network | ipaddress.IPv6Network):
            return address.version == host.version and address in host
        return address == host

    def __str__(self) -> str:
        protocol = "" if self.protocol is Protocol.ANY else f"{self.protocol}://"
        host = self.host
        if isinstance(host, ipaddress.IPv6Address):
            host_text = f"[{host}]"
        elif isinstance(host, ipaddress.IPv6Network):
            host_text = f"[{host.network_address}]/{host.prefixlen}"
        else:
            host_text = "" if host is None else str(host)
        port = "" if self.port is None else f":{self.port}"
        # The entry that matches everything still needs a non-empty spelling.
        return f"{protocol}{host_text}{port}" or "any://"


def parse_address_filter(text: str, *, with_protocol: bool = True) -> AddressFilter:
    """Parse one entry; `with_protocol=False` for DNS filters, which name no protocol."""
    if not text.strip():
        raise FilterSyntaxError("the entry is empty")
    protocol = Protocol.ANY
    rest = text
    if "://" in text:
        if not with_protocol:
            raise FilterSyntaxError("a DNS filter names no protocol")
        scheme, _, rest = text.partition("://")
        try:
            protocol = Protocol(scheme.lower())
        except ValueError:
            raise FilterSyntaxError(f"protocol {scheme!r} is not one of tcp, udp, any") from None
    host_text, prefix_text, port_text, bracketed = _split(rest)
    return AddressFilter(
        protocol, _parse_host(host_text, prefix_text, bracketed), _parse_port(port_text)
    )


def _split(rest: str) -> tuple[str, str | None, str | None, bool]:
    """-> (host, prefix or None, port or None, host was in brackets)."""
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0:
            raise FilterSyntaxError("'[' without a closing ']'")
        host, tail = rest[1:end], rest[end + 1 :]
        prefix = port = None
        if tail.startswith("/"):
            prefix, colon, port_part = tail[1:].partition(":")
            port = port_part if colon else None
        elif tail.startswith(":"):
            port = tail[1:]
        elif tail:
            raise FilterSyntaxError(f"unexpected {tail!r} after ']'")
        return host, prefix, port, True
    if rest.count(":") > 1:
        raise FilterSyntaxError("write IPv6 addresses in brackets, e.g. [::1]:80")
    host_and_prefix, colon, port_part = rest.partition(":")
    host, slash, prefix_part = host_and_prefix.partition("/")
    return host, (prefix_part if slash else None), (port_part if colon else None), False


def _parse_port(text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isascii() or not text.isdigit() or int(text) > 65535:
        raise FilterSyntaxError(f"port {text!r} is not a number from 0 to 65535")
    return int(text) or None


def _parse_host(
    text: str, prefix: str | None, bracketed: bool
) -> IPAddress | IPNetwork | str | None:
    if not text:
        if prefix is not None or bracketed:
            raise FilterSyntaxError("a subnet needs an IP address before the '/'")
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        address = None
    if bracketed and not isinstance(address, ipaddress.IPv6Address):
        raise FilterSyntaxError(f"{text!r} in brackets is not an IPv6 address")
    if isinstance(address, ipaddress.IPv6Address) and not bracketed:
        raise FilterSyntaxError("write IPv6 addresses in brackets, e.g. [::1]:80")
    if prefix is not None:
        if address is None:
            raise FilterSyntaxError(f"a subnet needs an IP address, not {text!r}")
        if not prefix.isascii() or not prefix.isdigit() or int(prefix) > address.max_prefixlen:
            raise FilterSyntaxError(
                f"prefix length {prefix!r} is not a number from 0 to {address.max_prefixlen}"
            )
        return ipaddress.ip_network(f"{address}/{prefix}", strict=False)
    if address is not None:
        if address.is_unspecified:
            return ipaddress.ip_network(f"{address}/0")
        return address
    return _parse_hostname(text)


def _parse_hostname(text: str) -> str:
    name = text.rstrip(".").lower() if text != "." else ""
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise FilterSyntaxError(f"{text!r} is neither an IP address nor a host name")
    if labels[-1].isdigit():
        # All-numeric last label: a mistyped IPv4 address (1.2.3.256), not a name.
        raise FilterSyntaxError(f"{text!r} is not a valid IPv4 address")
    return name
