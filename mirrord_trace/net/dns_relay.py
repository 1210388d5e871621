"""The DNS relay: the program's DNS queries, answered as the target (or the host) answers them.

A program's datagrams to a nameserver go to a relay socket on loopback instead (one per
nameserver and address family); TCP connections to a nameserver (the retry after a truncated
answer) go to the TCP relay and are served here. Each query is decided on its own
(handlers.dns.DnsQueryRouter): remote ones become `dns.query` requests the agent sends from
the target's network namespace, local ones go to the host's nameserver. Replies go back
unchanged; the outgoing handlers make them appear to come from the nameserver the program
addressed.

Which nameserver asks: a program that read the target's resolv.conf addresses the target's
nameserver; one that read the host's (e.g. with remote files off) addresses the host's. A
remote query to one of the host's nameservers is sent to the target's first nameserver, and
a local query to one of the target's goes to the host's first nameserver, so each side asks
a server it can reach.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from mirrord_trace.handlers.dns import DnsQueryRouter, answered_addresses
from mirrord_trace.net.names import ResolvedNames
from mirrord_trace.net.relays import loopback_socket
from mirrord_trace.net.sockaddr import InetAddress, IPAddress, socket_tuple

if TYPE_CHECKING:
    from mirrord_trace.agent_client import AgentClient
    from mirrord_trace.net.events import EventThread

QUERY_TIMEOUT = 5.0
MAX_DATAGRAM = 65535
_LENGTH = struct.Struct(">H")
DNS_PORT = 53


def parse_nameservers(resolv_conf: str) -> tuple[IPAddress, ...]:
    """The `nameserver` addresses of a resolv.conf, in order."""
    found = []
    for line in resolv_conf.splitlines():
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(words) >= 2 and words[0] == "nameserver":
            with contextlib.suppress(ValueError):
                found.append(ipaddress.ip_address(words[1].split("%", 1)[0]))
    return tuple(found)


def host_nameservers(path: str = "/etc/resolv.conf") -> tuple[IPAddress, ...]:
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            found = parse_nameservers(file.read())
    except OSError:
        found = ()
    # resolv.conf(5): without a nameserver line, the resolver asks the local machine.
    return found or (ipaddress.IPv4Address("127.0.0.1"),)


class Nameservers:
    """The target's nameservers (read through the agent once) and the host's."""

    def __init__(self, client: AgentClient | None) -> None:
        self.host = host_nameservers()
        self._target: Future[dict[str, Any]] | None = None
        if client is not None:
            try:
                self._target = client.request_async("fs.open_read", path="/etc/resolv.conf")
            except Exception:  # the agent is gone: nothing is remote any more anyway
                self._target = None
        self._resolved: tuple[IPAddress, ...] | None = None

    @property
    def target(self) -> tuple[IPAddress, ...]:
        if self._resolved is None:
            content = b""
            if self._target is not None:
                try:
                    content = self._target.result(QUERY_TIMEOUT).get("content", b"")
                except Exception:
                    content = b""
            self._resolved = parse_nameservers(bytes(content).decode(errors="replace"))
        return self._resolved

    def for_remote(self, server: InetAddress) -> InetAddress:
        target = self.target
        if server.ip not in target and server.ip in self.host and target:
            return InetAddress(target[0], DNS_PORT, server.family)
        return server

    def for_local(self, server: InetAddress) -> InetAddress:
        if server.ip in self.target and server.ip not in self.host:
            return InetAddress(self.host[0], DNS_PORT, server.family)
        return server


class DnsRelay:
    def __init__(
        self,
        events: EventThread,
        client: AgentClient,
        router: DnsQueryRouter,
        nameservers: Nameservers,
        names: ResolvedNames | None = None,
    ) -> None:
        self._events = events
        self._client = client
        self._router = router
        self._nameservers = nameservers
        self._names = names  # record answers only when outgoing filters name hosts
        self._endpoints: dict[tuple[InetAddress, int], socket.socket] = {}
        self._lock = threading.Lock()
        self._closed = False

    # -- called from the tracer thread --
    def udp_endpoint(self, server: InetAddress, family: int) -> tuple[str, int]:
        """The relay address that stands for `server` to a program socket of `family`."""
        key = (InetAddress(server.ip, server.port), family)
        with self._lock:
            sock = self._endpoints.get(key)
            if sock is None:
                sock = loopback_socket(family, socket.SOCK_DGRAM)
                sock.setblocking(False)
                self._endpoints[key] = sock
                self._events.call(self._watch_udp, sock, key[0])
        return sock.getsockname()[:2]

    def serve_tcp(
        self, connection: socket.socket, server: InetAddress, on_closed: Callable[[], None]
    ) -> None:
        """Answer the length-prefixed queries arriving on `connection` (its relay end);
        `on_closed` runs once the program has closed it."""
        connection.setblocking(False)
        self._events.call(self._start_tcp, connection, server, on_closed)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            endpoints, self._endpoints = list(self._endpoints.values()), {}
        for sock in endpoints:
            with contextlib.suppress(Exception):
                self._events.call(self._events.loop.remove_reader, sock.fileno())
            sock.close()

    # -- the relays' event loop --
    def _watch_udp(self, sock: socket.socket, server: InetAddress) -> None:
        if sock.fileno() >= 0:
            asyncio.get_running_loop().add_reader(sock.fileno(), self._on_query, sock, server)

    def _on_query(self, sock: socket.socket, server: InetAddress) -> None:
        while True:
            try:
                query, source = sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # an ICMP error for an earlier reply: the program's socket is gone

            def reply(answer: bytes, source: Any = source) -> None:
                with contextlib.suppress(OSError):
                    sock.sendto(answer, source)

            self._answer(query, server, "udp", reply)

    def _answer(
        self, query: bytes, server: InetAddress, transport: str, reply: Callable[[bytes], None]
    ) -> None:
        remote, _why = self._router.decide(query, server.port)
        if remote:
            self._ask_target(query, self._nameservers.for_remote(server), transport, reply)
        else:
            asked = self._nameservers.for_local(server)
            asyncio.get_running_loop().create_task(
                self._ask_host(query, asked, transport, reply)
            )

    def _ask_target(
        self, query: bytes, server: InetAddress, transport: str, reply: Callable[[bytes], None]
    ) -> None:
        try:
            future = self._client.request_async(
                "dns.query", payload=query, nameserver=server.host, port=server.port,
                transport=transport, timeout=QUERY_TIMEOUT,
            )  # fmt: skip
        except Exception:
            return  # the agent is gone: the program's resolver times out, as without a server
        loop = asyncio.get_running_loop()

        def done(finished: Future[dict[str, Any]]) -> None:
            if finished.exception() is None:
                answer = bytes(finished.result()["payload"])
                loop.call_soon_threadsafe(self._deliver, answer, reply)

        future.add_done_callback(done)

    async def _ask_host(
        self, query: bytes, server: InetAddress, transport: str, reply: Callable[[bytes], None]
    ) -> None:
        loop = asyncio.get_running_loop()
        family = server.network_family
        address = socket_tuple(server.ip, server.port, family)
        kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
        try:
            with socket.socket(family, kind) as sock:
                sock.setblocking(False)
                async with asyncio.timeout(QUERY_TIMEOUT):
                    await loop.sock_connect(sock, address)
                    if transport == "udp":
                        await loop.sock_sendall(sock, query)
                        while True:
                            answer = await loop.sock_recv(sock, MAX_DATAGRAM)
                            if answer[:2] == query[:2]:
                                break
                    else:
                        await loop.sock_sendall(sock, _LENGTH.pack(len(query)) + query)
                        (size,) = _LENGTH.unpack(await _receive_exactly(loop, sock, 2))
                        answer = await _receive_exactly(loop, sock, size)
        except (OSError, TimeoutError, EOFError):
            return  # no answer: the program's resolver times out or tries its next server
        self._deliver(answer, reply)

    def _deliver(self, answer: bytes, reply: Callable[[bytes], None]) -> None:
        if self._names is not None:
            for name, address in answered_addresses(answer):
                self._names.record(name, [address])
        reply(answer)

    def _start_tcp(
        self, connection: socket.socket, server: InetAddress, on_closed: Callable[[], None]
    ) -> None:
        task = asyncio.get_running_loop().create_task(self._serve_tcp(connection, server))
        task.add_done_callback(lambda _: on_closed())

    async def _serve_tcp(self, connection: socket.socket, server: InetAddress) -> None:
        loop = asyncio.get_running_loop()
        pending: set[asyncio.Future[None]] = set()

        def reply(answer: bytes) -> None:
            framed = _LENGTH.pack(len(answer)) + answer
            task = loop.create_task(loop.sock_sendall(connection, framed))
            pending.add(task)
            task.add_done_callback(pending.discard)

        with connection:
            try:
                while True:
                    (size,) = _LENGTH.unpack(await _receive_exactly(loop, connection, 2))
                    query = await _receive_exactly(loop, connection, size)
                    self._answer(query, server, "tcp", reply)
            except (OSError, EOFError):
                pass
            if pending:
                await asyncio.wait(pending, timeout=QUERY_TIMEOUT)


async def _receive_exactly(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int
) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await loop.sock_recv(sock, size - len(data))
        if not chunk:
            raise EOFError("the peer closed the connection")
        data += chunk
    return bytes(data)
