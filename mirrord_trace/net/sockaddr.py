"""struct sockaddr_in / sockaddr_in6 in the program's memory <-> a typed InetAddress.

An IPv6 socket may name an IPv4 destination as a v4-mapped address (::ffff:a.b.c.d): the
destination is then the IPv4 address, and answers go back in the form the program used.
Shared by outgoing traffic (destinations) and incoming traffic (listeners, their clients).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SOCKADDR_IN_SIZE = 16
SOCKADDR_IN6_SIZE = 28
# The shortest forms the kernel accepts or writes: sockaddr_in without its zero padding, and
# sockaddr_in6 without sin6_scope_id (RFC 2133's size, which bind accepts).
_SHORT_SIZES = {socket.AF_INET: 8, socket.AF_INET6: 24}
_FULL_SIZES = {socket.AF_INET: SOCKADDR_IN_SIZE, socket.AF_INET6: SOCKADDR_IN6_SIZE}
# Large enough for any sockaddr a program passes for an inet socket (sockaddr_storage is 128).
MAX_SOCKADDR_SIZE = 128

_FAMILY = struct.Struct("=H")
_SOCKLEN = struct.Struct("=I")
_IN = struct.Struct("=H2s4s8x")  # family, port (network order), address
_IN6 = struct.Struct("=H2s4s16sI")  # family, port, flowinfo (network order), address, scope id


@dataclass(frozen=True, slots=True)
class InetAddress:
    """An inet endpoint. `ip` is what the network sees (IPv4 for a v4-mapped address);
    `family` is the sockaddr family the program used."""

    ip: IPAddress
    port: int
    family: int = socket.AF_INET
    flowinfo: int = 0
    scope_id: int = 0

    @property
    def host(self) -> str:
        return str(self.ip)

    @property
    def network_family(self) -> int:
        """The family of a socket that reaches `ip` directly (AF_INET for a mapped address)."""
        return socket.AF_INET if self.ip.version == 4 else socket.AF_INET6

    @property
    def socket_ip(self) -> IPAddress:
        """`ip` as a socket of `family` spells it (IPv4 in AF_INET6: v4-mapped)."""
        if self.family == socket.AF_INET6 and self.ip.version == 4:
            return _v4_mapped(self.ip)
        return self.ip

    @property
    def is_loopback(self) -> bool:
        ip = self.ip
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        return (mapped or ip).is_loopback

    @property
    def is_unspecified(self) -> bool:
        """The wildcard of `family`: ::ffff:0.0.0.0 in an IPv6 socket is not (IPv4 only)."""
        return self.socket_ip.is_unspecified

    def sockaddr_tuple(self) -> tuple[str, int] | tuple[str, int, int, int]:
        """The address in Python's socket module form, for a socket of `family`."""
        if self.family == socket.AF_INET:
            return (str(self.ip), self.port)
        return (str(self.socket_ip), self.port, self.flowinfo, self.scope_id)

    def as_family(self, family: int) -> InetAddress:
        """The same endpoint for a socket of `family` (an IPv4 socket cannot name an IPv6
        address: it gets 0.0.0.0)."""
        if family == self.family:
            return self
        ip = self.ip
        if family == socket.AF_INET and ip.version == 6:
            ip = ip.ipv4_mapped or ipaddress.IPv4Address(0)  # type: ignore[union-attr]
        return InetAddress(ip, self.port, family)

    def packed(self) -> bytes:
        """The whole sockaddr, flowinfo and scope id included."""
        return pack_sockaddr(self.ip, self.port, self.family, self.scope_id, self.flowinfo)

    def __str__(self) -> str:
        return f"[{self.ip}]:{self.port}" if self.ip.version == 6 else f"{self.ip}:{self.port}"


def _v4_mapped(ip: IPAddress) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + ip.packed)


def sockaddr_family(raw: bytes) -> int | None:
    return _FAMILY.unpack_from(raw)[0] if len(raw) >= _FAMILY.size else None


def parse_sockaddr(raw: bytes, *, short_forms: bool = False) -> InetAddress | None:
    """The inet address in `raw`, or None when it is not a complete inet sockaddr.

    `short_forms`: also a sockaddr_in without its padding and a sockaddr_in6 without its
    scope id (then 0), as bind accepts them and accept writes into a small buffer.
    """
    family = sockaddr_family(raw)
    if short_forms and family in _FULL_SIZES and len(raw) < _FULL_SIZES[family]:
        if len(raw) < _SHORT_SIZES[family]:
            return None
        raw = raw[: _SHORT_SIZES[family]].ljust(_FULL_SIZES[family], b"\0")
    if family == socket.AF_INET and len(raw) >= SOCKADDR_IN_SIZE:
        _, port, address = _IN.unpack_from(raw)
        return InetAddress(ipaddress.IPv4Address(address), int.from_bytes(port, "big"))
    if family == socket.AF_INET6 and len(raw) >= SOCKADDR_IN6_SIZE:
        _, port, flowinfo, address, scope_id = _IN6.unpack_from(raw)
        ip = ipaddress.IPv6Address(address)
        mapped = ip.ipv4_mapped
        return InetAddress(
            mapped if mapped is not None else ip,
            int.from_bytes(port, "big"),
            socket.AF_INET6,
            int.from_bytes(flowinfo, "big"),
            scope_id,
        )
    return None


def pack_sockaddr(
    ip: IPAddress, port: int, family: int, scope_id: int = 0, flowinfo: int = 0
) -> bytes:
    """The sockaddr for ip:port as a socket of `family` sees it (IPv4 in AF_INET6: mapped)."""
    port_bytes = port.to_bytes(2, "big")
    if family == socket.AF_INET:
        if ip.version != 4:
            raise ValueError(f"an IPv4 socket cannot address {ip}")
        return _IN.pack(socket.AF_INET, port_bytes, ip.packed)
    if ip.version == 4:
        ip = _v4_mapped(ip)
    return _IN6.pack(socket.AF_INET6, port_bytes, flowinfo.to_bytes(4, "big"), ip.packed, scope_id)


def sockaddr_writes(
    encoded: bytes, buffer: int, length_pointer: int, room: int
) -> tuple[tuple[int, bytes], ...]:
    """What the kernel writes for a sockaddr out-parameter (getsockname, accept, recvfrom...):
    at most `room` bytes of the address, then its full size, so a short buffer tells."""
    size = (length_pointer, _SOCKLEN.pack(len(encoded)))
    return ((buffer, encoded[:room]), size) if room > 0 else (size,)


def from_socket_tuple(address: tuple[object, ...], family: int) -> InetAddress:
    """A Python socket address tuple (host, port[, flowinfo, scope_id]) as an InetAddress."""
    ip = ipaddress.ip_address(str(address[0]).split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    port = int(address[1])  # type: ignore[call-overload]
    if len(address) == 4:
        return InetAddress(ip, port, family, int(address[2]), int(address[3]))  # type: ignore[call-overload]
    return InetAddress(ip, port, family)


def socket_tuple(ip: IPAddress, port: int, family: int) -> tuple[str, int]:
    """The address tuple a Python socket of `family` connects to (IPv4 in AF_INET6: mapped)."""
    if family == socket.AF_INET6 and ip.version == 4:
        return (f"::ffff:{ip}", port)
    return (str(ip), port)
