"""The outgoing family's syscall handlers (see mirrord_trace.handlers.outgoing)."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
import sys
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mirrord_trace.agent_client import AgentLost, RemoteError
from mirrord_trace.config.filters import Protocol
from mirrord_trace.handlers.actions import Action, Emulate, ExitStop, Wait
from mirrord_trace.handlers.call import SyscallCall
from mirrord_trace.net.flows import Flow, UdpRoute
from mirrord_trace.net.policy import Route
from mirrord_trace.net.relays import (
    bind_if_unbound,
    loopback_socket,
    program_address_seen_from_loopback,
)
from mirrord_trace.net.sockaddr import (
    MAX_SOCKADDR_SIZE,
    InetAddress,
    from_socket_tuple,
    pack_sockaddr,
    parse_sockaddr,
    sockaddr_family,
    sockaddr_writes,
    socket_tuple,
)
from mirrord_trace.net.tracee_socket import socket_inode
from mirrord_trace.tracer.memory import TraceeMemoryError

if TYPE_CHECKING:
    from mirrord_trace.net.session import NetSession

# The agent's connect timeout; a program's own shorter one is not seen by the agent.
CONNECT_TIMEOUT = 30.0
MAX_DATAGRAM = 65535
_SOCKLEN = struct.Struct("=I")
_INT = struct.Struct("=i")
# struct msghdr: name, namelen, iov, iovlen, control, controllen, flags (56 bytes).
_MSGHDR = struct.Struct("=QI4xQQQQi4x")
_MMSGHDR_SIZE = _MSGHDR.size + 8  # struct mmsghdr: msghdr, unsigned msg_len, padding
_IOVEC = struct.Struct("=QQ")
_CMSGHDR = struct.Struct("=Qii")
_AF_UNSPEC = 0

# A failed connect whose errno the kernel reports at once even for non-blocking sockets (no
# route, bad address); the others arrive later, through SO_ERROR, after EINPROGRESS.
_IMMEDIATE_CONNECT_ERRORS = frozenset(
    {errno.ENETUNREACH, errno.EACCES, errno.EPERM, errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT,
     errno.EINVAL, errno.EBADF}
)  # fmt: skip


def _protocol_of(sock: socket.socket) -> Protocol | None:
    if sock.type == socket.SOCK_STREAM and sock.proto in (0, socket.IPPROTO_TCP):
        return Protocol.TCP
    if sock.type == socket.SOCK_DGRAM and sock.proto in (0, socket.IPPROTO_UDP):
        return Protocol.UDP
    return None  # SCTP, raw, ICMP "ping" sockets: not relayed


def _is_nonblocking(sock: socket.socket) -> bool:
    return bool(fcntl.fcntl(sock.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK)


def _inode(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


def _relay_key(address: tuple[Any, ...], family: int) -> tuple[Any, int]:
    relay = from_socket_tuple(address, family)
    return (relay.ip, relay.port)


@dataclass
class Datagram:
    """One message the program sends: destination None means the socket's connected peer."""

    destination: InetAddress | None
    buffers: list[bytes]
    ancillary: list[tuple[int, int, bytes]] = field(default_factory=list)


class OutgoingHandlers:
    def __init__(self, net: NetSession, explain: bool = False) -> None:
        self.net = net
        self.flows = net.flows
        self.explain = explain

    # -- connect --
    def connect(self, call: SyscallCall) -> Action | None:
        fd, address, size = call.int_arg(0), call.args[1], call.args[2] & 0xFFFFFFFF
        if address == 0 or size < 2:
            return None
        raw = call.memory.read(address, min(size, MAX_SOCKADDR_SIZE))
        destination = parse_sockaddr(raw)
        if destination is None:
            if sockaddr_family(raw) == _AF_UNSPEC and self.flows.connected:
                self._forget_udp_peer(call, fd)  # connect(AF_UNSPEC): a UDP socket's disconnect
            return None
        policy = self.net.policy
        tcp = policy.decide(Protocol.TCP, destination)
        udp = policy.decide(Protocol.UDP, destination)
        if tcp.route is Route.LOCAL and udp.route is Route.LOCAL:
            return None
        try:
            program = self.net.sockets.borrow(call.tgid, fd)
        except OSError:
            return None  # not a socket, or a bad fd: the kernel says so itself
        try:
            protocol = _protocol_of(program)
            if protocol is None:
                return None
            decision = tcp if protocol is Protocol.TCP else udp
            inode = _inode(program)
            pending = self.flows.pending_errors.pop(inode, None)
            if pending is not None:
                return Emulate(-pending, why="the earlier connect's failure")
            if protocol is Protocol.UDP:
                self._forget_udp_peer(call, fd, inode)  # a UDP socket may connect again
            if decision.route is Route.LOCAL:
                return None
            if protocol is Protocol.TCP:
                if inode in self.flows.connected:
                    return None  # connected through us already: EISCONN / EALREADY
                if decision.route is Route.DNS:
                    return self._connect_tcp_dns(call, program, inode, destination, decision.why)
                return self._connect_tcp_remote(call, program, inode, destination, decision.why)
            if decision.route is Route.DNS:
                return self._connect_udp_dns(call, program, inode, destination, decision.why)
            return self._connect_udp_remote(call, program, inode, destination, decision.why)
        finally:
            program.close()

    def _connect_tcp_remote(
        self,
        call: SyscallCall,
        program: socket.socket,
        inode: int,
        destination: InetAddress,
        why: str,
    ) -> Action:
        nonblocking = _is_nonblocking(program)
        tgid, fd = call.tgid, call.int_arg(0)
        started = self._start_stream(destination, "tcp")
        if isinstance(started, Emulate):
            return started
        stream_id, reply = started
        claim = self.net.expect_claim(stream_id)

        def finish(done: Future[dict[str, Any]]) -> int:
            claim()
            try:
                info = done.result()
            except RemoteError as error:
                return self._connect_failed(inode, _errno_of(error), nonblocking)
            try:
                with self._reborrow(tgid, fd, inode) as program:
                    relay_end = self.net.tcp_relay.join(program)
            except OSError as error:
                self.net.client.drop_stream(stream_id)
                return -(error.errno or errno.EIO)
            self.flows.connected[inode] = Flow(
                Protocol.TCP, destination, _target_side(info, destination.family), stream_id, tgid
            )
            sent_all = self.net.client.attach_stream(
                stream_id, relay_end, on_finished=lambda: self.flows.forget_connected(inode)
            )
            self.net.track_sending(sent_all)
            return -errno.EINPROGRESS if nonblocking else 0

        return Wait(reply, finish, why=f"{why} ({destination})")

    def _start_stream(
        self, destination: InetAddress, transport: str
    ) -> tuple[int, Future[dict[str, Any]]] | Emulate:
        try:
            return self.net.client.start_stream(
                family=destination.network_family, host=destination.host,
                port=destination.port, transport=transport, timeout=CONNECT_TIMEOUT,
            )  # fmt: skip
        except RemoteError as error:  # the agent is gone: nothing is reachable through it
            return Emulate(-errno.ENETUNREACH, why=f"no agent: {error}")

    def _connect_failed(self, inode: int, code: int, nonblocking: bool) -> int:
        if nonblocking and code not in _IMMEDIATE_CONNECT_ERRORS:
            # As the kernel does: EINPROGRESS now; the socket (still unconnected) polls ready
            # at once, and SO_ERROR, or connect again, tells the failure.
            self.flows.pending_errors[inode] = code
            return -errno.EINPROGRESS
        return -code

    def _connect_tcp_dns(
        self,
        call: SyscallCall,
        program: socket.socket,
        inode: int,
        destination: InetAddress,
        why: str,
    ) -> Action:
        try:
            relay_end = self.net.tcp_relay.join(program)
        except OSError as error:
            return Emulate(-(error.errno or errno.EIO), why=f"{why}: {error}")
        self.flows.connected[inode] = Flow(Protocol.TCP, destination, None, None, call.tgid)
        self.net.dns.serve_tcp(relay_end, destination, lambda: self.flows.forget_connected(inode))
        result = -errno.EINPROGRESS if _is_nonblocking(program) else 0
        return Emulate(result, why=f"{why} ({destination}, tcp)")

    def _connect_udp_dns(
        self,
        call: SyscallCall,
        program: socket.socket,
        inode: int,
        destination: InetAddress,
        why: str,
    ) -> Action:
        relay = self.net.dns.udp_endpoint(destination, program.family)
        try:
            program.connect(relay)
        except OSError as error:
            return Emulate(-(error.errno or errno.EIO), why=f"{why}: {error}")
        self.flows.relay_peers[_relay_key(relay, program.family)] = destination
        self.flows.relayed_udp[inode] = call.tgid
        self.flows.connected[inode] = Flow(Protocol.UDP, destination, None, None, call.tgid)
        self.net.start_sweeping()
        return Emulate(0, why=f"{why} ({destination})")

    def _connect_udp_remote(
        self,
        call: SyscallCall,
        program: socket.socket,
        inode: int,
        destination: InetAddress,
        why: str,
    ) -> Action:
        tgid, fd = call.tgid, call.int_arg(0)
        started = self._start_stream(destination, "udp")
        if isinstance(started, Emulate):
            return started
        stream_id, reply = started
        claim = self.net.expect_claim(stream_id)

        def finish(done: Future[dict[str, Any]]) -> int:
            claim()
            try:
                info = done.result()
            except RemoteError as error:
                return -_errno_of(error)
            try:
                with self._reborrow(tgid, fd, inode) as program:
                    relay = loopback_socket(program.family, socket.SOCK_DGRAM)
                    try:
                        program.connect(relay.getsockname())
                        relay.connect(program_address_seen_from_loopback(program))
                    except OSError:
                        relay.close()
                        raise
            except OSError as error:
                self.net.client.drop_stream(stream_id)
                return -(error.errno or errno.EIO)
            key = _relay_key(relay.getsockname(), relay.family)
            self.flows.relay_peers[key] = destination
            self.flows.relayed_udp[inode] = tgid
            self.flows.connected[inode] = Flow(
                Protocol.UDP, destination, _target_side(info, destination.family), stream_id, tgid
            )

            def finished() -> None:
                self.flows.forget_connected(inode)
                self.flows.relay_peers.pop(key, None)

            self.net.client.attach_stream(stream_id, relay, on_finished=finished)
            return 0

        return Wait(reply, finish, why=f"{why} ({destination}, udp)")

    def _forget_udp_peer(self, call: SyscallCall, fd: int, inode: int | None = None) -> None:
        """A UDP socket connects elsewhere (or disconnects): its old remote stream ends."""
        if inode is None:
            inode = socket_inode(call.tid, fd)
        flow = self.flows.connected.get(inode) if inode is not None else None
        if flow is not None and flow.protocol is Protocol.UDP:
            self.flows.connected.pop(inode, None)  # type: ignore[arg-type]
            if flow.stream_id is not None:
                self.net.client.drop_stream(flow.stream_id)

    def _reborrow(self, tgid: int, fd: int, inode: int) -> socket.socket:
        """The program's socket again, after a wait: it must still be the same socket."""
        program = self.net.sockets.borrow(tgid, fd)
        if _inode(program) != inode:
            program.close()
            raise OSError(errno.EBADF, "the program closed the socket meanwhile")
        return program

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
            if _protocol_of(program) is not Protocol.UDP:
                return None  # TCP ignores the address (or it is TCP Fast Open): not ours
            inode = _inode(program)
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
            self.flows.relay_peers[_relay_key(relay, program.family)] = destination
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
                return -_errno_of(error)
            try:
                with self._reborrow(tgid, fd, inode) as program:
                    relay = loopback_socket(program.family, socket.SOCK_DGRAM)
                    try:
                        relay.connect(program_address_seen_from_loopback(program))
                    except OSError:
                        relay.close()
                        raise
                    address = relay.getsockname()[:2]
                    key = _relay_key(address, relay.family)
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

    # -- what the program learns about its connections --
    def getpeername(self, call: SyscallCall) -> Action | None:
        flow = self._flow(call)
        if flow is None:
            return None
        return self._report_address(call, flow.peer, "the destination the program asked for")

    def getsockname(self, call: SyscallCall) -> Action | None:
        flow = self._flow(call)
        if flow is None or flow.local is None:
            return None
        return self._report_address(call, flow.local, "the address in the target")

    def _flow(self, call: SyscallCall) -> Flow | None:
        if not self.flows.connected:
            return None
        inode = socket_inode(call.tid, call.int_arg(0))
        return self.flows.connected.get(inode) if inode is not None else None

    def _report_address(self, call: SyscallCall, address: InetAddress, why: str) -> Action:
        buffer, length_pointer = call.args[1], call.args[2]
        (room,) = _INT.unpack(call.memory.read(length_pointer, 4))
        if room < 0:
            return Emulate(-errno.EINVAL)
        encoded = pack_sockaddr(address.ip, address.port, address.family)
        writes = sockaddr_writes(encoded, buffer, length_pointer, room)
        return Emulate(0, writes, why=f"{why}: {address}")

    def getsockopt(self, call: SyscallCall) -> Action | None:
        if call.int_arg(1) != socket.SOL_SOCKET or not self.flows.pending_errors:
            return None
        inode = socket_inode(call.tid, call.int_arg(0))
        code = self.flows.pending_errors.pop(inode, None) if inode is not None else None
        if code is None:
            return None
        value, length_pointer = call.args[3], call.args[4]
        (room,) = _INT.unpack(call.memory.read(length_pointer, 4))
        if room < 0:
            return Emulate(-errno.EINVAL)
        size = min(room, _INT.size)
        writes = ((value, _INT.pack(code)[:size]), (length_pointer, _SOCKLEN.pack(size)))
        return Emulate(0, writes, why=f"connect failed: {errno.errorcode.get(code, code)}")

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


def _errno_of(error: RemoteError) -> int:
    """What the program sees: the target's answer, or, with the agent gone, an unreachable
    network (nothing is reachable through the target any more)."""
    return errno.ENETUNREACH if isinstance(error, AgentLost) else error.errno


def _target_side(info: dict[str, Any], family: int) -> InetAddress | None:
    """The agent's socket address in the target (net.connect's "local"), for getsockname."""
    try:
        host, port = info["local"]
        local = from_socket_tuple((host, port), family)
    except (KeyError, TypeError, ValueError):
        return None
    return InetAddress(local.ip, local.port, family)


_reported_failures: set[str] = set()


def _report_failure(where: str, error: BaseException) -> None:
    """One line per kind of failure: a bug here must not kill the program, nor go unseen."""
    key = f"{where}:{type(error).__name__}"
    if key not in _reported_failures:
        _reported_failures.add(key)
        print(f"mirrord-trace: error: outgoing {where} failed: {error!r} (the call runs "
              "unchanged; please report this)", file=sys.stderr, flush=True)


def guarded(handler: Callable[[SyscallCall], Action | None]) -> Callable[[SyscallCall],
                                                                          Action | None]:
    """The handler, or None (the syscall runs as the program made it) if it fails unexpectedly.
    A Wait's finish is guarded the same way: it answers EIO instead."""
    name = handler.__name__

    def run(call: SyscallCall) -> Action | None:
        try:
            action = handler(call)
        except TraceeMemoryError:
            raise  # the tracer answers EFAULT: the program passed a bad pointer
        except Exception as error:
            _report_failure(name, error)
            return None
        if isinstance(action, Wait):
            return Wait(action.future, _guarded_finish(name, action.finish), action.why)
        return action

    return run


def _guarded_finish(
    name: str, finish: Callable[[Future[Any]], int | Emulate]
) -> Callable[[Future[Any]], int | Emulate]:
    def run(done: Future[Any]) -> int | Emulate:
        try:
            return finish(done)
        except TraceeMemoryError:
            return -errno.EFAULT
        except Exception as error:
            _report_failure(name, error)
            return -errno.EIO

    return run
