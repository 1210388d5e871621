"""The dns.* and net.* requests. Every socket here is created by the event loop's thread,
which entered the target's network namespace before the loop started, so the traffic leaves
from the target's namespace (sockets keep the namespace they were created in)."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import select
import socket
import struct
from typing import Any

from mirrord_trace.protocol.requests import InvalidRequest

_DNS_ID = struct.Struct(">H")
_FAMILIES = {socket.AF_INET: 4, socket.AF_INET6: 6}


def socket_address(family: int, host: str, port: int) -> tuple[Any, ...]:
    """The sockaddr tuple for a numeric `host`; InvalidRequest when it is not one."""
    if family not in _FAMILIES:
        raise InvalidRequest(errno.EAFNOSUPPORT, f"address family {family} is not inet/inet6")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise InvalidRequest(errno.EINVAL, f"{host!r} is not a numeric IP address") from None
    if address.version != _FAMILIES[family]:
        raise InvalidRequest(errno.EAFNOSUPPORT, f"{host} is not an IPv{_FAMILIES[family]} address")
    if not 0 <= port <= 65535:
        raise InvalidRequest(errno.EINVAL, f"port {port} is out of range")
    return (host, port) if family == socket.AF_INET else (host, port, 0, 0)


def family_of(host: str) -> int:
    try:
        version = ipaddress.ip_address(host).version
    except ValueError:
        raise InvalidRequest(errno.EINVAL, f"{host!r} is not a numeric IP address") from None
    return socket.AF_INET if version == 4 else socket.AF_INET6


async def connect_socket(
    family: int, kind: int, address: tuple[Any, ...], timeout: float
) -> socket.socket:
    """A non-blocking socket connected to `address`; OSError with ETIMEDOUT on timeout."""
    sock = socket.socket(family, kind)
    sock.setblocking(False)
    try:
        if _connected_at_once(sock, address):
            return sock
        async with asyncio.timeout(timeout):
            await _handshake_done(sock)
    except TimeoutError:
        sock.close()
        message = f"connecting to {address[0]} port {address[1]} timed out"
        raise OSError(errno.ETIMEDOUT, message) from None
    except BaseException:
        sock.close()
        raise
    return sock


def _connected_at_once(sock: socket.socket, address: tuple[Any, ...]) -> bool:
    """Start the connect; True when it has completed already (OSError when it failed).

    A UDP connect, and a TCP handshake with an address of the target's own node (the pod's
    own address, loopback) are done by the time connect(2) returns or a poll later: waiting
    for that on the event loop (a writer callback, a future, a task wake-up, the timeout's
    timer) cost a few hundred microseconds of every net.connect on a busy machine.
    """
    code = sock.connect_ex(address)
    if code == 0:
        return True
    if code not in (errno.EINPROGRESS, errno.EAGAIN):
        raise OSError(code, os.strerror(code))
    poller = select.poll()
    poller.register(sock, select.POLLOUT)
    if not poller.poll(0):
        return False  # a real network round trip: the event loop waits for it
    code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if code:
        raise OSError(code, os.strerror(code))
    return True


async def _handshake_done(sock: socket.socket) -> None:
    """Wait on the event loop until the connect started on `sock` completes; OSError if it
    failed."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    fd = sock.fileno()

    def writable() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_writer(fd, writable)
    try:
        await done
    finally:
        loop.remove_writer(fd)
    code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if code:
        raise OSError(code, os.strerror(code))


async def dns_query(fields: dict[str, Any]) -> dict[str, Any]:
    """Send one DNS message to a nameserver as the target would; return the reply unchanged."""
    payload: bytes = fields["payload"]
    nameserver: str = fields["nameserver"]
    family = family_of(nameserver)
    address = socket_address(family, nameserver, fields["port"])
    timeout = float(fields["timeout"])
    if len(payload) < _DNS_ID.size:
        raise InvalidRequest(errno.EINVAL, "a DNS message is at least 12 bytes")
    loop = asyncio.get_running_loop()
    if fields["transport"] == "tcp":
        sock = await connect_socket(family, socket.SOCK_STREAM, address, timeout)
        with sock:
            async with asyncio.timeout(timeout):
                await loop.sock_sendall(sock, struct.pack(">H", len(payload)) + payload)
                (length,) = struct.unpack(">H", await _receive_exactly(sock, 2))
                return {"payload": await _receive_exactly(sock, length)}
    sock = await connect_socket(family, socket.SOCK_DGRAM, address, timeout)
    with sock:
        await loop.sock_sendall(sock, payload)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    reply = await loop.sock_recv(sock, 65535)
                    # Stray datagrams (late replies to other queries) carry another id.
                    if reply[:2] == payload[:2]:
                        return {"payload": reply}
        except TimeoutError:
            message = f"no DNS reply from {nameserver} within {timeout} s"
            raise OSError(errno.ETIMEDOUT, message) from None


async def _receive_exactly(sock: socket.socket, size: int) -> bytes:
    loop = asyncio.get_running_loop()
    data = bytearray()
    while len(data) < size:
        chunk = await loop.sock_recv(sock, size - len(data))
        if not chunk:
            raise OSError(errno.ECONNRESET, "the DNS server closed the connection early")
        data += chunk
    return bytes(data)


async def connect_unix(root: Any, path: str, timeout: float) -> socket.socket:
    """A non-blocking stream socket connected to the Unix socket at `path` in the target's
    root: the path is resolved inside the root (openat2, like every file request), and the
    socket is reached through the O_PATH descriptor's /proc/self/fd entry, so neither `..`
    nor a symlink can lead out of the target."""
    if not path.startswith("/"):
        raise InvalidRequest(errno.EINVAL, f"{path!r} is not an absolute path")
    with root.opened(path, os.O_PATH) as fd:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(timeout):
                await asyncio.get_running_loop().sock_connect(sock, f"/proc/self/fd/{fd}")
        except TimeoutError:
            sock.close()
            raise OSError(errno.ETIMEDOUT, f"connecting to {path} timed out") from None
        except BaseException:
            sock.close()
            raise
    return sock
