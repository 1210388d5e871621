"""Stealing: the target's new connections to a port come to the agent instead of the target.

iptables REDIRECT rules (agent.incoming.rules) send them to the agent's steal listener, in the
target's network namespace; SO_ORIGINAL_DST tells which port each was meant for. A connection
to a port stolen without a filter becomes a stream to the subscribed session as it is; with an
HTTP filter, agent.http.connection routes it request by request (HTTP/1.x and HTTP/2). A
connection whose port nobody steals any more (it raced an unsubscribe) goes on to the
target, as if never stolen.

Before the first rule, the guardian process is started (agent.incoming.guardian): the rules are
gone when the agent ends, however it ends. Rules left by agents that died with their guardian
are removed when the first port is stolen.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import struct
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from agent.http.connection import serve_filtered
from agent.http.filter import Filter
from agent.http.relay import Streams, pipe_both
from agent.incoming.guardian import Guardian, GuardianError
from agent.incoming.rules import (
    AGENT_MARK,
    PortTaken,
    RuleBook,
    RuleError,
    agent_tag,
    flush_connections,
    remove_abandoned_rules,
)
from agent.incoming.stolen import StolenConnection

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h; IP6T_SO_ORIGINAL_DST has the same value
SO_MARK = 36
_SOCKADDR_IN = struct.Struct("!2xH4s8x")
_SOCKADDR_IN6 = struct.Struct("!2xH4x16s4x")
CONNECT_TIMEOUT = 10.0


class StealReceiver(Protocol):
    """A steal subscription, as the hub sees it."""

    http_filter: Filter | None

    def take_connection(self, info: dict[str, Any], connection: StolenConnection) -> bool:
        """Hand a whole connection to the program; False when the session is gone."""
        ...

    async def open_program_stream(self, info: dict[str, Any]) -> Streams | None:
        """A new connection to the program, for requests the filter sends there."""
        ...


def original_destination(sock: socket.socket) -> tuple[str, int] | None:
    """Where the client meant to connect before REDIRECT, or None if it was not redirected."""
    try:
        if sock.family == socket.AF_INET:
            raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, _SOCKADDR_IN.size)
            port, address = _SOCKADDR_IN.unpack(raw)
            return socket.inet_ntop(socket.AF_INET, address), port
        raw = sock.getsockopt(socket.IPPROTO_IPV6, SO_ORIGINAL_DST, _SOCKADDR_IN6.size)
        port, address = _SOCKADDR_IN6.unpack(raw)
        return socket.inet_ntop(socket.AF_INET6, address), port
    except OSError:
        return None


async def connect_to_target(host: str, port: int) -> Streams:
    """A connection to the target that the steal rules let through (it carries AGENT_MARK)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_MARK, AGENT_MARK)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        async with asyncio.timeout(CONNECT_TIMEOUT):
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except TimeoutError:
        sock.close()
        raise OSError(errno.ETIMEDOUT, f"connecting to {host} port {port} timed out") from None
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock)


def _listening_socket(family: int, port: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
        sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class StealHub:
    """The agent's steal listener, its rules and guardian, and the stolen ports' receivers."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self._log = log
        self._receivers: dict[int, StealReceiver] = {}
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.listen_port = 0
        self.tag = agent_tag()
        self.rules = RuleBook(self.tag)
        self.guardian = Guardian(self.tag)

    @property
    def ports(self) -> set[int]:
        return set(self._receivers)

    async def add(
        self, port: int, receiver: StealReceiver, override: bool = False, flush: bool = False
    ) -> None:
        """Steal `port` for `receiver`; OSError(EADDRINUSE) when another session steals it,
        unless `override` (mirrord's on_concurrent_steal): then new connections come here.
        `flush`: the port's open connections are cut once the rules are in (they reconnect,
        and are stolen)."""
        if port in self._receivers and not override:
            raise OSError(errno.EADDRINUSE, f"port {port} is already stolen by another session")
        self._receivers[port] = receiver
        try:
            if not self._servers:
                await self._start()
            await asyncio.to_thread(self.rules.redirect, port, self.listen_port, override)
            if flush:
                flushed = await asyncio.to_thread(flush_connections, port)
                self._log(f"port {port}: {flushed} open connections cut (flush_connections)")
        except (RuleError, GuardianError, OSError) as error:
            if self._receivers.get(port) is receiver:
                del self._receivers[port]
                self.rules.release(port)  # a flush that failed after the rules went in
            code = errno.EADDRINUSE if isinstance(error, PortTaken) else errno.EACCES
            raise OSError(code, f"cannot steal port {port}: {error}") from None
        if port not in self._receivers:
            self.rules.release(port)  # unsubscribed while the rules were being added
        for warning in self.rules.warnings:
            self._log(warning)
        self.rules.warnings.clear()

    def remove(self, port: int, receiver: StealReceiver) -> None:
        """Give `port` back to the target (new connections; stolen ones carry on)."""
        if self._receivers.get(port) is not receiver:
            return
        del self._receivers[port]
        self.rules.release(port)

    def close(self) -> None:
        self._receivers.clear()
        self.rules.release_all()
        self.guardian.stop()
        for server in self._servers:
            server.close()
        self._servers.clear()

    async def _start(self) -> None:
        await asyncio.to_thread(self.guardian.start)
        removed = await asyncio.to_thread(remove_abandoned_rules)
        if removed:
            self._log(f"removed {removed} steal rules left by agents that are gone")
        v4 = _listening_socket(socket.AF_INET, 0)
        self.listen_port = v4.getsockname()[1]
        sockets = [v4]
        try:
            sockets.append(_listening_socket(socket.AF_INET6, self.listen_port))
        except OSError as error:
            self._log(f"no IPv6 steal listener: {error.strerror}")
        loop = asyncio.get_running_loop()
        for sock in sockets:
            server = await loop.create_server(lambda: StolenConnection(self._route), sock=sock)
            self._servers.append(server)

    def _route(self, connection: StolenConnection) -> None:
        """A connection was just accepted (nothing read yet): decide where it goes."""
        transport = connection.transport
        assert transport is not None
        sock: socket.socket = transport.get_extra_info("socket")
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        destination = original_destination(sock)
        if destination is None or destination[1] == self.listen_port:
            transport.close()  # reached the listener directly: not a stolen connection
            return
        peer = transport.get_extra_info("peername")
        host, port = destination
        info = {"mode": "steal", "port": port, "peer": [peer[0], peer[1]], "local": [host, port]}
        receiver = self._receivers.get(port)
        if receiver is not None and receiver.http_filter is None:
            if receiver.take_connection(info, connection):
                return
            receiver = None  # its session is gone: the target answers, as before
        client = connection.as_streams()
        if receiver is not None:
            self._spawn(self._filter(receiver, info, client, destination))
        else:
            self._spawn(self._pass_to_target(client, destination))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _filter(
        self,
        receiver: StealReceiver,
        info: dict[str, Any],
        client: Streams,
        destination: tuple[str, int],
    ) -> None:
        assert receiver.http_filter is not None

        async def open_target() -> Streams:
            return await connect_to_target(*destination)

        async def open_program() -> Streams | None:
            return await receiver.open_program_stream(info)

        await serve_filtered(client, receiver.http_filter, open_program, open_target)

    async def _pass_to_target(self, client: Streams, destination: tuple[str, int]) -> None:
        try:
            target = await connect_to_target(*destination)
        except OSError:
            client[1].transport.abort()
            return
        await pipe_both(client, target)
