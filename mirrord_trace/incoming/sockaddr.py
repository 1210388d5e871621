"""`struct sockaddr_in` / `sockaddr_in6` as the kernel lays them out, and back."""

from __future__ import annotations

import ipaddress
import socket
import struct
import sys
from dataclasses import dataclass

SOCKADDR_IN_SIZE = 16
SOCKADDR_IN6_SIZE = 28
_SOCKADDR_IN6_MIN = 24  # without sin6_scope_id (RFC 2133): the kernel accepts it for bind
_PORT_AND_FLOW = struct.Struct("!HI")


@dataclass(frozen=True, slots=True)
class InetAddress:
    family: int  # socket.AF_INET or socket.AF_INET6
    host: str
    port: int
    flowinfo: int = 0
    scope_id: int = 0

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        return ipaddress.ip_address(self.host)

    @property
    def is_loopback(self) -> bool:
        ip = self.ip
        mapped = getattr(ip, "ipv4_mapped", None)
        return (mapped or ip).is_loopback

    @property
    def is_unspecified(self) -> bool:
        return self.ip.is_unspecified

    def sockaddr_tuple(self) -> tuple[str, int] | tuple[str, int, int, int]:
        """The address in Python's socket module form."""
        if self.family == socket.AF_INET:
            return (self.host, self.port)
        return (self.host, self.port, self.flowinfo, self.scope_id)

    @classmethod
    def from_tuple(cls, family: int, value: tuple) -> InetAddress:  # type: ignore[type-arg]
        if family == socket.AF_INET:
            return cls(family, value[0], value[1])
        return cls(family, value[0], value[1], value[2], value[3])

    def as_family(self, family: int) -> InetAddress:
        """The same endpoint for a socket of `family` (IPv4 becomes IPv4-mapped IPv6)."""
        if family == self.family:
            return self
        if family == socket.AF_INET6:
            return InetAddress(family, f"::ffff:{self.host}", self.port)
        mapped = getattr(self.ip, "ipv4_mapped", None)
        return InetAddress(family, str(mapped) if mapped else "0.0.0.0", self.port)


def _family_of(data: bytes) -> int:
    return int.from_bytes(data[:2], sys.byteorder)


def decode_sockaddr(data: bytes) -> InetAddress | None:
    """An IPv4/IPv6 address from sockaddr bytes; None for other families or short buffers."""
    if len(data) < 2:
        return None
    family = _family_of(data)
    if family == socket.AF_INET and len(data) >= SOCKADDR_IN_SIZE - 8:
        port = int.from_bytes(data[2:4], "big")
        return InetAddress(family, socket.inet_ntop(socket.AF_INET, data[4:8]), port)
    if family == socket.AF_INET6 and len(data) >= _SOCKADDR_IN6_MIN:
        port, flowinfo = _PORT_AND_FLOW.unpack_from(data, 2)
        scope = int.from_bytes(data[24:28], sys.byteorder) if len(data) >= 28 else 0
        host = socket.inet_ntop(socket.AF_INET6, data[8:24])
        return InetAddress(family, host, port, flowinfo, scope)
    return None


def encode_sockaddr(address: InetAddress) -> bytes:
    family = address.family.to_bytes(2, sys.byteorder)
    packed = socket.inet_pton(address.family, address.host)
    if address.family == socket.AF_INET:
        return family + address.port.to_bytes(2, "big") + packed + bytes(8)
    return (
        family
        + _PORT_AND_FLOW.pack(address.port, address.flowinfo)
        + packed
        + address.scope_id.to_bytes(4, sys.byteorder)
    )
