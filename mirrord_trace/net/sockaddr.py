"""struct sockaddr_in / sockaddr_in6 in the program's memory <-> a typed InetAddress.

An IPv6 socket may name an IPv4 destination as a v4-mapped address (::ffff:a.b.c.d): the
destination is then the IPv4 address, and answers go back in the form the program used.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SOCKADDR_IN_SIZE = 16
SOCKADDR_IN6_SIZE = 28
# Large enough for any sockaddr a program passes for an inet socket (sockaddr_storage is 128).
MAX_SOCKADDR_SIZE = 128

_FAMILY = struct.Struct("=H")
_IN = struct.Struct("=H2s4s8x")  # family, port (network order), address
_IN6 = struct.Struct("=H2s4s16sI")  # family, port, flowinfo (network order), address, scope id


@dataclass(frozen=True, slots=True)
class InetAddress:
    """An inet destination. `ip` is what the network sees (IPv4 for a v4-mapped address);
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

    def __str__(self) -> str:
        return f"[{self.ip}]:{self.port}" if self.ip.version == 6 else f"{self.ip}:{self.port}"


def sockaddr_family(raw: bytes) -> int | None:
    return _FAMILY.unpack_from(raw)[0] if len(raw) >= _FAMILY.size else None


def parse_sockaddr(raw: bytes) -> InetAddress | None:
    """The inet address in `raw`, or None when it is not a complete inet sockaddr."""
    family = sockaddr_family(raw)
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


def pack_sockaddr(ip: IPAddress, port: int, family: int, scope_id: int = 0) -> bytes:
    """The sockaddr for ip:port as a socket of `family` sees it (IPv4 in AF_INET6: mapped)."""
    port_bytes = port.to_bytes(2, "big")
    if family == socket.AF_INET:
        if ip.version != 4:
            raise ValueError(f"an IPv4 socket cannot address {ip}")
        return _IN.pack(socket.AF_INET, port_bytes, ip.packed)
    if ip.version == 4:
        ip = ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + ip.packed)
    return _IN6.pack(socket.AF_INET6, port_bytes, bytes(4), ip.packed, scope_id)


def from_socket_tuple(address: tuple[object, ...], family: int) -> InetAddress:
    """A Python socket address tuple (host, port[, flowinfo, scope_id]) as an InetAddress."""
    ip = ipaddress.ip_address(str(address[0]).split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return InetAddress(ip, int(address[1]), family)  # type: ignore[call-overload]


def socket_tuple(ip: IPAddress, port: int, family: int) -> tuple[str, int]:
    """The address tuple a Python socket of `family` connects to (IPv4 in AF_INET6: mapped)."""
    if family == socket.AF_INET6 and ip.version == 4:
        return (f"::ffff:{ip}", port)
    return (str(ip), port)
