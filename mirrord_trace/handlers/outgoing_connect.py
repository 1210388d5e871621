"""The outgoing family's connect path and what a program learns about its connections
(getpeername, getsockname, getsockopt); see mirrord_trace.handlers.outgoing."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from mirrord_trace.agent_client import AgentLost, RemoteError
from mirrord_trace.config.filters import Protocol
from mirrord_trace.handlers.actions import Action, Emulate, Wait
from mirrord_trace.handlers.call import SyscallCall
from mirrord_trace.net.flows import Flow
from mirrord_trace.net.policy import Route
from mirrord_trace.net.relays import (
    loopback_socket,
    program_address_seen_from_loopback,
    unix_relay_end,
)
from mirrord_trace.net.sockaddr import (
    MAX_SOCKADDR_SIZE,
    InetAddress,
    from_socket_tuple,
    pack_sockaddr,
    parse_sockaddr,
    sockaddr_family,
    sockaddr_writes,
)
from mirrord_trace.net.tracee_socket import socket_inode

if TYPE_CHECKING:
    from mirrord_trace.net.session import NetSession

# The agent's connect timeout; a program's own shorter one is not seen by the agent.
CONNECT_TIMEOUT = 30.0
_SOCKLEN = struct.Struct("=I")
_INT = struct.Struct("=i")
_AF_UNSPEC = 0
_FAMILY_SIZE = 2  # sa_family_t

# A failed connect whose errno the kernel reports at once even for non-blocking sockets (no
# route, bad address); the others arrive later, through SO_ERROR, after EINPROGRESS.
_IMMEDIATE_CONNECT_ERRORS = frozenset(
    {errno.ENETUNREACH, errno.EACCES, errno.EPERM, errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT,
     errno.EINVAL, errno.EBADF}
)  # fmt: skip


def unix_socket_path(raw: bytes) -> str | None:
    """The path of a sockaddr_un; None for an abstract or unnamed one."""
    name = raw[_FAMILY_SIZE:]
    if not name or name[:1] == b"\0":
        return None
    return os.fsdecode(name.split(b"\0", 1)[0])


def protocol_of(sock: socket.socket) -> Protocol | None:
    if sock.type == socket.SOCK_STREAM and sock.proto in (0, socket.IPPROTO_TCP):
        return Protocol.TCP
    if sock.type == socket.SOCK_DGRAM and sock.proto in (0, socket.IPPROTO_UDP):
        return Protocol.UDP
    return None  # SCTP, raw, ICMP "ping" sockets: not relayed


def is_nonblocking(sock: socket.socket) -> bool:
    return bool(fcntl.fcntl(sock.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK)


def inode_of(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


def relay_key(address: tuple[Any, ...], family: int) -> tuple[Any, int]:
    relay = from_socket_tuple(address, family)
    return (relay.ip, relay.port)



def errno_of(error: RemoteError) -> int:
    """What the program sees: the target's answer, or, with the agent gone, an unreachable
    network (nothing is reachable through the target any more)."""
    return errno.ENETUNREACH if isinstance(error, AgentLost) else error.errno


def target_side(info: dict[str, Any], family: int) -> InetAddress | None:
    """The agent's socket address in the target (net.connect's "local"), for getsockname."""
    try:
        host, port = info["local"]
        local = from_socket_tuple((host, port), family)
    except (KeyError, TypeError, ValueError):
        return None
    return InetAddress(local.ip, local.port, family)



class ConnectCalls:
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
            if sockaddr_family(raw) == socket.AF_UNIX and self.net.unix_streams:
                return self._connect_unix(call, raw)
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
            protocol = protocol_of(program)
            if protocol is None:
                return None
            decision = tcp if protocol is Protocol.TCP else udp
            inode = inode_of(program)
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
                return self._connect_remote(
                    call, program, inode, destination, decision.why, protocol
                )
            if decision.route is Route.DNS:
                return self._connect_udp_dns(call, program, inode, destination, decision.why)
            return self._connect_remote(call, program, inode, destination, decision.why, protocol)
        finally:
            program.close()

    def _connect_remote(
        self,
        call: SyscallCall,
        program: socket.socket,
        inode: int,
        destination: InetAddress,
        why: str,
        protocol: Protocol,
    ) -> Action:
        """The one connect path through the agent: a stream is started now, the call waits
        for its reply, then the stream gets its local end (a TCP relay end, or a loopback
        UDP socket the program's socket is connected to)."""
        tcp = protocol is Protocol.TCP
        nonblocking = tcp and is_nonblocking(program)
        tgid, fd = call.tgid, call.int_arg(0)
        started = self._start_stream(destination, protocol.value)
        if isinstance(started, Emulate):
            return started
        stream_id, reply = started
        claim = self.net.expect_claim(stream_id)
        local_end = self._tcp_local_end if tcp else self._udp_local_end

        def finish(done: Future[dict[str, Any]]) -> int:
            claim()
            try:
                info = done.result()
            except RemoteError as error:
                code = errno_of(error)
                return self._connect_failed(inode, code, nonblocking) if tcp else -code
            try:
                with self._reborrow(tgid, fd, inode) as program:
                    end, on_finished = local_end(program, inode, destination, tgid)
            except OSError as error:
                self.net.client.drop_stream(stream_id)
                return -(error.errno or errno.EIO)
            self.flows.connected[inode] = Flow(
                protocol, destination, target_side(info, destination.family), stream_id, tgid
            )
            sent_all = self.net.client.attach_stream(stream_id, end, on_finished=on_finished)
            if not tcp:
                return 0
            self.net.track_sending(sent_all)
            return -errno.EINPROGRESS if nonblocking else 0

        return Wait(reply, finish, why=f"{why} ({destination}{'' if tcp else ', udp'})")

    def _connect_unix(self, call: SyscallCall, raw: bytes) -> Action | None:
        """feature.network.outgoing.unix_streams: a Unix stream socket whose path matches is
        connected to the socket of that path in the target (through an agent stream)."""
        path = unix_socket_path(raw)
        if path is None or not any(pattern.search(path) for pattern in self.net.unix_streams):
            return None
        tgid, fd = call.tgid, call.int_arg(0)
        try:
            program = self.net.sockets.borrow(tgid, fd)
        except OSError:
            return None
        with program:
            if program.type != socket.SOCK_STREAM:
                return None  # datagram Unix sockets stay local
            inode = inode_of(program)
        try:
            stream_id, reply = self.net.client.start_stream(
                family=socket.AF_UNIX, host=path, port=0, transport="tcp",
                timeout=CONNECT_TIMEOUT,
            )  # fmt: skip
        except RemoteError as error:
            return Emulate(-errno.ECONNREFUSED, why=f"no agent: {error}")
        claim = self.net.expect_claim(stream_id)

        def finish(done: Future[dict[str, Any]]) -> int:
            claim()
            try:
                done.result()
            except RemoteError as error:
                return -errno_of(error)
            try:
                with self._reborrow(tgid, fd, inode) as program:
                    end = unix_relay_end(program)
            except OSError as error:
                self.net.client.drop_stream(stream_id)
                return -(error.errno or errno.EIO)
            self.net.track_sending(self.net.client.attach_stream(stream_id, end))
            return 0

        return Wait(reply, finish, why=f"remote: unix socket {path} in the target (unix_streams)")

    def _tcp_local_end(
        self, program: socket.socket, inode: int, destination: InetAddress, tgid: int
    ) -> tuple[socket.socket, Callable[[], None]]:
        relay_end = self.net.tcp_relay.join(program)
        return relay_end, lambda: self.flows.forget_connected(inode)

    def _udp_local_end(
        self, program: socket.socket, inode: int, destination: InetAddress, tgid: int
    ) -> tuple[socket.socket, Callable[[], None]]:
        relay = loopback_socket(program.family, socket.SOCK_DGRAM)
        try:
            program.connect(relay.getsockname())
            relay.connect(program_address_seen_from_loopback(program))
        except OSError:
            relay.close()
            raise
        key = relay_key(relay.getsockname(), relay.family)
        self.flows.relay_peers[key] = destination
        self.flows.relayed_udp[inode] = tgid

        def finished() -> None:
            self.flows.forget_connected(inode)
            self.flows.relay_peers.pop(key, None)

        return relay, finished

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
        result = -errno.EINPROGRESS if is_nonblocking(program) else 0
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
        self.flows.relay_peers[relay_key(relay, program.family)] = destination
        self.flows.relayed_udp[inode] = call.tgid
        self.flows.connected[inode] = Flow(Protocol.UDP, destination, None, None, call.tgid)
        self.net.start_sweeping()
        return Emulate(0, why=f"{why} ({destination})")

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
        if inode_of(program) != inode:
            program.close()
            raise OSError(errno.EBADF, "the program closed the socket meanwhile")
        return program

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
