"""The outgoing family's datagram handlers (sendto, sendmsg, sendmmsg and the replies' source
addresses) on top of its connect path (handlers.outgoing_connect); see
mirrord_trace.handlers.outgoing."""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from mirrord_trace.agent_client import RemoteError
from mirrord_trace.config.filters import Protocol
from mirrord_trace.handlers.actions import Action, Emulate, ExitStop, Wait
from mirrord_trace.handlers.call import SyscallCall
from mirrord_trace.handlers.outgoing_connect import (
    ConnectCalls,
    errno_of,
    inode_of,
    protocol_of,
    relay_key,
)
from mirrord_trace.net.flows import UdpRoute
from mirrord_trace.net.policy import Route
from mirrord_trace.net.relays import (
    bind_if_unbound,
    loopback_socket,
    program_address_seen_from_loopback,
)
from mirrord_trace.net.sockaddr import (
    MAX_SOCKADDR_SIZE,
    InetAddress,
    pack_sockaddr,
    parse_sockaddr,
    sockaddr_writes,
    socket_tuple,
)
from mirrord_trace.net.tracee_socket import socket_inode

MAX_DATAGRAM = 65535
_SOCKLEN = struct.Struct("=I")
_INT = struct.Struct("=i")
# struct msghdr: name, namelen, iov, iovlen, control, controllen, flags (56 bytes).
_MSGHDR = struct.Struct("=QI4xQQQQi4x")
_MMSGHDR_SIZE = _MSGHDR.size + 8  # struct mmsghdr: msghdr, unsigned msg_len, padding
_IOVEC = struct.Struct("=QQ")
_CMSGHDR = struct.Struct("=Qii")


@dataclass
class Datagram:
    """One message the program sends: destination None means the socket's connected peer."""

    destination: InetAddress | None
    buffers: list[bytes]
    ancillary: list[tuple[int, int, bytes]] = field(default_factory=list)


class OutgoingHandlers(ConnectCalls):
    """Every handler of the outgoing family."""

    # -- sending datagrams --
    def sendto(self, call: SyscallCall) -> Action | None:
        address, size = call.args[4], call.args[5] & 0xFFFFFFFF
        if address == 0 or size < 2:
            return None
        destination = parse_sockaddr(call.memory.read(address, min(size, MAX_SOCKADDR_SIZE)))
        if destination is None or self._stays_local(destination):
            return None
        buffer, length = call.args[1], min(call.args[2], MAX_DATAGRAM + 1)

        def datagrams() -> list[Datagram]:
            return [Datagram(destination, [call.memory.read(buffer, length)])]

        return self._send(call, datagrams, call.int_arg(3), batch=None)

    def sendmsg(self, call: SyscallCall) -> Action | None:
        header = call.args[1]
        if header == 0:
            return None
        name, name_size = struct.unpack("=QI", call.memory.read(header, 12))
        if name == 0 or name_size < 2:
            return None
        destination = parse_sockaddr(call.memory.read(name, min(name_size, MAX_SOCKADDR_SIZE)))
        if destination is None or self._stays_local(destination):
            return None
        return self._send(
            call, lambda: [self._read_message(call, header)], call.int_arg(2), batch=None
        )

    def sendmmsg(self, call: SyscallCall) -> Action | None:
        vector, count = call.args[1], min(call.int_arg(2), 1024)
        if vector == 0 or count <= 0:
            return None
        destinations = []
        for index in range(count):
            name, name_size = struct.unpack(
                "=QI", call.memory.read(vector + index * _MMSGHDR_SIZE, 12)
            )
            raw = call.memory.read(name, min(name_size, MAX_SOCKADDR_SIZE)) if name else b""
            destinations.append(parse_sockaddr(raw) if name_size >= 2 else None)
        if all(d is None or self._stays_local(d) for d in destinations):
            return None

        def datagrams() -> list[Datagram]:
            return [
                self._read_message(call, vector + index * _MMSGHDR_SIZE)
                for index in range(count)
            ]

        return self._send(call, datagrams, call.int_arg(3), batch=vector)

    def _stays_local(self, destination: InetAddress) -> bool:
        return self.net.policy.decide(Protocol.UDP, destination).route is Route.LOCAL

    def _read_message(self, call: SyscallCall, header: int) -> Datagram:
        name, name_size, iov, iov_count, control, control_size, _ = _MSGHDR.unpack(
            call.memory.read(header, _MSGHDR.size)
        )
        destination = None
        if name and name_size >= 2:
            destination = parse_sockaddr(
                call.memory.read(name, min(name_size, MAX_SOCKADDR_SIZE))
            )
        buffers = []
        total = 0
        for index in range(min(iov_count, 1024)):
            base, length = _IOVEC.unpack(call.memory.read(iov + index * _IOVEC.size, _IOVEC.size))
            length = min(length, MAX_DATAGRAM + 1 - total)
            if length > 0:
                buffers.append(call.memory.read(base, length))
                total += length
        ancillary = []
        if control and control_size:
            raw = call.memory.read(control, min(control_size, 4096))
            offset = 0
            while offset + _CMSGHDR.size <= len(raw):
                length, level, kind = _CMSGHDR.unpack_from(raw, offset)
                if length < _CMSGHDR.size or offset + length > len(raw):
                    break
                ancillary.append((level, kind, raw[offset + _CMSGHDR.size : offset + length]))
                offset += (length + 7) & ~7
        return Datagram(destination, buffers, ancillary)

    def _send(
        self,
        call: SyscallCall,
        read_datagrams: Callable[[], list[Datagram]],
        flags: int,
        batch: int | None,
    ) -> Action | None:
        """Send datagrams through relays ourselves; `batch` is sendmmsg's vector (the count
        is the result, each msg_len is written back) or None (the byte count is the result)."""
        tgid, fd = call.tgid, call.int_arg(0)
        try:
            program = self.net.sockets.borrow(tgid, fd)
        except OSError:
            return None
        try:
            if protocol_of(program) is not Protocol.UDP:
                return None  # TCP ignores the address (or it is TCP Fast Open): not ours
            inode = inode_of(program)
            datagrams = read_datagrams()
            sent: list[int] = []
            failure: int | None = None
            for datagram in datagrams:
                target = self._relay_for(program, inode, datagram.destination)
                if isinstance(target, _NewRoute):
                    if sent:
                        break  # sendmmsg: report what went; the program sends the rest again
                    return self._send_after_new_route(call, inode, target, datagram, flags, batch)
                try:
                    sent.append(self._send_one(program, datagram, flags, target))
                except OSError as error:
                    failure = error.errno or errno.EIO
                    break
                if target is not None:
                    self.flows.relayed_udp[inode] = tgid
            if not sent:
                return Emulate(-(failure or errno.EIO), why="sending through the relay failed")
            return self._sent_result(sent, batch, "through the relay")
        finally:
            program.close()

    def _relay_for(
        self, program: socket.socket, inode: int, destination: InetAddress | None
    ) -> tuple[str, int] | _NewRoute | None:
        """Where the datagram goes: a relay address, None for "as the program asked", or a
        route that needs the agent first."""
        if destination is None:
            return None
        decision = self.net.policy.decide(Protocol.UDP, destination)
        if decision.route is Route.LOCAL:
            return None
        if decision.route is Route.DNS:
            relay = self.net.dns.udp_endpoint(destination, program.family)
            self.flows.relay_peers[relay_key(relay, program.family)] = destination
            self.net.start_sweeping()
            return relay
        route = self.flows.udp_routes.get((inode, destination))
        if route is not None:
            return route.relay
        return _NewRoute(destination, decision.why)

    @staticmethod
    def _send_one(
        program: socket.socket, datagram: Datagram, flags: int, target: tuple[str, int] | None
    ) -> int:
        destination = datagram.destination
        if target is None and destination is not None:
            target = socket_tuple(destination.ip, destination.port, program.family)
        if target is None:
            return program.sendmsg(datagram.buffers, datagram.ancillary, flags)
        return program.sendmsg(datagram.buffers, datagram.ancillary, flags, target)

    @staticmethod
    def _sent_result(sent: list[int], batch: int | None, why: str) -> Emulate:
        if batch is None:
            return Emulate(sent[0], why=why)
        writes = tuple(
            (batch + index * _MMSGHDR_SIZE + _MSGHDR.size, _SOCKLEN.pack(length))
            for index, length in enumerate(sent)
        )
        return Emulate(len(sent), writes, why=why)

    def _send_after_new_route(
        self,
        call: SyscallCall,
        inode: int,
        new: _NewRoute,
        datagram: Datagram,
        flags: int,
        batch: int | None,
    ) -> Action:
        """The first datagram from this socket to `new.destination`: the agent opens the
        route (a connected UDP socket in the target), then the datagram goes."""
        tgid, fd = call.tgid, call.int_arg(0)
        destination = new.destination
        program = self.net.sockets.borrow(tgid, fd)
        try:
            bind_if_unbound(program)  # the relay must know the program's port beforehand
        except OSError as error:
            program.close()
            return Emulate(-(error.errno or errno.EIO), why=f"binding for the relay: {error}")
        program.close()
        started = self._start_stream(destination, "udp")
        if isinstance(started, Emulate):
            return started
        stream_id, reply = started
        claim = self.net.expect_claim(stream_id)

        def finish(done: Future[dict[str, Any]]) -> int | Emulate:
            claim()
            try:
                done.result()
            except RemoteError as error:
                return -errno_of(error)
            try:
                with self._reborrow(tgid, fd, inode) as program:
                    relay = loopback_socket(program.family, socket.SOCK_DGRAM)
                    try:
                        relay.connect(program_address_seen_from_loopback(program))
                    except OSError:
                        relay.close()
                        raise
                    address = relay.getsockname()[:2]
                    key = relay_key(address, relay.family)
                    self.flows.relay_peers[key] = destination
                    self.flows.relayed_udp[inode] = tgid
                    self.flows.udp_routes[(inode, destination)] = UdpRoute(
                        address, stream_id, tgid
                    )
                    self.net.client.attach_stream(
                        stream_id,
                        relay,
                        on_finished=lambda: self._route_finished(inode, destination, key),
                    )
                    length = self._send_one(program, datagram, flags, address)
            except OSError as error:
                self.net.client.drop_stream(stream_id)
                return -(error.errno or errno.EIO)
            return self._sent_result([length], batch, f"{new.why} ({destination}, udp)")

        return Wait(reply, finish, why=f"{new.why} ({destination}, udp)")

    def _route_finished(self, inode: int, destination: InetAddress, key: Any) -> None:
        self.flows.forget_udp_route(inode, destination)
        self.flows.relay_peers.pop(key, None)


    # -- the source address of relayed UDP replies --

    def recvfrom(self, call: SyscallCall) -> Action | None:
        if not self.flows.relayed_udp:
            return None
        if not self._relayed_udp_socket(call):
            return None
        address, length_pointer = call.args[4], call.args[5]
        if length_pointer == 0:
            return None
        (room,) = _INT.unpack(call.memory.read(length_pointer, 4))
        return ExitStop(lambda result: self._rewrite_source(call, result, address,
                                                            length_pointer, room))

    def recvmsg(self, call: SyscallCall) -> Action | None:
        if not self.flows.relayed_udp:
            return None
        header = call.args[1]
        name, room = struct.unpack("=QI", call.memory.read(header, 12))
        if name == 0 or not self._relayed_udp_socket(call):
            return None
        # The kernel writes the address's size back into the msghdr's msg_namelen (offset 8).
        return ExitStop(lambda result: self._rewrite_source(call, result, name, header + 8,
                                                            room))

    def _relayed_udp_socket(self, call: SyscallCall) -> bool:
        return socket_inode(call.tid, call.int_arg(0)) in self.flows.relayed_udp

    def _rewrite_source(
        self, call: SyscallCall, result: int, address: int, length_pointer: int, room: int
    ) -> Emulate | None:
        if result < 0 or room <= 0:
            return None
        (size,) = _SOCKLEN.unpack(call.memory.read(length_pointer, 4))
        source = parse_sockaddr(call.memory.read(address, min(size, room, MAX_SOCKADDR_SIZE)))
        if source is None:
            return None
        original = self.flows.relay_peers.get((source.ip, source.port))
        if original is None:
            return None
        encoded = pack_sockaddr(original.ip, original.port, source.family)
        writes = sockaddr_writes(encoded, address, length_pointer, room)
        return Emulate(result, writes, why=f"reply from {original}")


@dataclass(frozen=True)
class _NewRoute:
    destination: InetAddress
    why: str


