"""Listening sockets: bind, listen, getsockname, accept/accept4 (feature.network.incoming).

A program that binds a TCP socket to port L of a subscribed port gets its socket bound to a
free port of this machine instead (listen_ports may name it), so several programs can listen
on "the same" port side by side; getsockname keeps reporting L. When listen() has succeeded,
the agent is asked to mirror or steal the target's port; connections then arrive through the
relay (mirrord_trace.incoming.relay), and accept reports the original client's address.

Every other call (UDP, unsubscribed ports, sockets that are not ours) is left alone: these
handlers return None so that another family (outgoing traffic) may decide.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import sys
from typing import Any

from mirrord_trace.handlers.actions import Action, Emulate, ExitStop, Inject, InjectArgs
from mirrord_trace.handlers.call import SyscallCall
from mirrord_trace.handlers.trap import SessionContext, Trap
from mirrord_trace.incoming.policy import IncomingPolicy
from mirrord_trace.incoming.state import IncomingState, Listener, RelayedConnection
from mirrord_trace.net.sockaddr import (
    MAX_SOCKADDR_SIZE,
    SOCKADDR_IN6_SIZE,
    InetAddress,
    from_socket_tuple,
    parse_sockaddr,
    sockaddr_writes,
)
from mirrord_trace.net.tracee_socket import TraceeSockets, socket_inode
from mirrord_trace.syscall_table import SYSCALL_NUMBERS, SyscallShape

BIND = SyscallShape("bind", ("fd", "ptr", "int"))
LISTEN = SyscallShape("listen", ("fd", "int"))
GETSOCKNAME = SyscallShape("getsockname", ("fd", "ptr", "ptr"))
ACCEPT = SyscallShape("accept", ("fd", "ptr", "ptr"))
ACCEPT4 = SyscallShape("accept4", ("fd", "ptr", "ptr", "int"))
INCOMING_SYSCALLS = (BIND, LISTEN, GETSOCKNAME, ACCEPT, ACCEPT4)

_SOCKLEN = struct.Struct("=i")


class IncomingHandlers:
    def __init__(
        self,
        policy: IncomingPolicy,
        agent: Any,
        state: IncomingState | None = None,
    ) -> None:
        self.policy = policy
        self.agent = agent
        self.state = state or IncomingState()
        self.sockets = TraceeSockets()  # the caller closes it when the run ends
        from mirrord_trace.incoming.relay import IncomingConnector  # asyncio: only when needed

        self.connector = IncomingConnector(agent, self.state)
        agent.on_incoming_stream = self.connector.on_incoming_stream

    # -- bind --
    def bind(self, call: SyscallCall) -> Action | None:
        length = call.args[2] & 0xFFFFFFFF
        if not 16 <= length <= MAX_SOCKADDR_SIZE:
            return None
        raw = call.memory.read(call.args[1], min(length, SOCKADDR_IN6_SIZE))
        requested = parse_sockaddr(raw, short_forms=True)
        if requested is None:
            return None
        decision = self.policy.decide(requested)
        if decision is None:
            return None
        try:
            sock = self.sockets.borrow(call.tgid, call.int_arg(0))
        except OSError:
            return None  # not a socket, or no such fd: the kernel says so itself
        with sock:
            if sock.type != socket.SOCK_STREAM or sock.family != requested.family:
                return None  # UDP, or a mismatch the kernel reports better than we would
            try:
                actual = self._bind_here(sock, requested, decision.local_port)
            except OSError as error:
                return Emulate(-(error.errno or errno.EINVAL), why=f"bind here: {error.strerror}")
            inode = self._inode(sock)
        self.state.add_listener(Listener(inode, requested, actual, decision))
        here = f"{actual.socket_ip}:{actual.port}"
        return Emulate(0, why=f"{decision.describe()}; listens here on {here}")

    @staticmethod
    def _bind_here(sock: socket.socket, requested: InetAddress, port: int) -> InetAddress:
        """Bind the program's socket to a free (or the configured) port of this machine."""
        address = InetAddress(requested.ip, port, requested.family, 0, requested.scope_id)
        try:
            sock.bind(address.sockaddr_tuple())
        except OSError as error:
            if error.errno != errno.EADDRNOTAVAIL:
                raise
            # The target's address (the pod IP) does not exist here: any address will do.
            anywhere = "0.0.0.0" if requested.family == socket.AF_INET else "::"
            sock.bind((anywhere, port))  # flowinfo and scope id: 0
        return from_socket_tuple(sock.getsockname(), sock.family)

    @staticmethod
    def _inode(sock: socket.socket) -> int:
        return os.fstat(sock.fileno()).st_ino

    # -- listen --
    def listen(self, call: SyscallCall) -> Action | None:
        listener = self.state.listener(socket_inode(call.tid, call.int_arg(0)))
        if listener is None or listener.subscription is not None:
            return None

        def subscribe_once_listening(result: int) -> int | None:
            if result != 0:
                return None
            return self._subscribe(listener)

        return ExitStop(subscribe_once_listening, why=listener.decision.describe())

    def _subscribe(self, listener: Listener) -> int | None:
        """Ask the agent for the remote port; a failure becomes listen()'s errno."""
        from mirrord_trace.agent_client import RemoteError

        decision = listener.decision
        existing = self.state.subscription_for(decision.remote_port)
        if existing is not None:
            self.state.subscribed(listener, existing)  # a second socket (IPv4 + IPv6...)
            return None
        try:
            reply = self.agent.request(
                "incoming.subscribe",
                timeout=60.0,
                port=decision.remote_port,
                mode=decision.mode,
                http_filter=dict(decision.http_filter or {}),
                handover=decision.mode == "steal" and self.connector.takes_handovers,
                override=decision.on_concurrent_steal == "override",
                flush=decision.mode == "steal" and self.policy.flush_connections,
            )
        except RemoteError as error:
            if error.errno == errno.EADDRINUSE and decision.on_concurrent_steal == "continue":
                print(
                    f"mirrord-trace: warning: port {decision.remote_port} of the target is "
                    f"stolen by another session ({error}); on_concurrent_steal is "
                    '"continue": the program listens on this machine only',
                    file=sys.stderr,
                    flush=True,
                )
                return None
            print(
                f"mirrord-trace: error: cannot {decision.mode} port {decision.remote_port} of "
                f"the target: {error} (the program's listen() fails)",
                file=sys.stderr,
                flush=True,
            )
            return -error.errno
        self.state.subscribed(listener, int(reply["subscription"]))
        return None

    # -- getsockname --
    def getsockname(self, call: SyscallCall) -> Action | None:
        inode = socket_inode(call.tid, call.int_arg(0))
        listener = self.state.listener(inode)
        if listener is not None:
            address = listener.requested
        else:
            connection = self.state.accepted_connection(inode)
            if connection is None:
                return None
            address = connection.local  # the target's address, as the client reached it
        return self._report(call, address, "reports the port the program asked for")

    def _report(self, call: SyscallCall, address: InetAddress, why: str) -> Action:
        buffer, length_pointer = call.args[1], call.args[2]
        (room,) = _SOCKLEN.unpack(call.memory.read(length_pointer, 4))
        if room < 0:
            return Emulate(-errno.EINVAL)
        return Emulate(0, sockaddr_writes(address.packed(), buffer, length_pointer, room), why=why)

    # -- accept / accept4 --
    def accept(self, call: SyscallCall) -> Action | None:
        listener = self.state.listener(socket_inode(call.tid, call.int_arg(0)))
        if listener is None:
            return None
        buffer, length_pointer = call.args[1], call.args[2]
        room = 0
        if buffer and length_pointer:
            (room,) = _SOCKLEN.unpack(call.memory.read(length_pointer, 4))
        flags = call.int_arg(3) if call.nr == ACCEPT4.nr else 0
        memory, tid, family = call.memory, call.tid, listener.requested.family

        def on_accepted(result: int) -> Emulate | Inject | None:
            if result < 0:
                return None
            seen = None
            if room > 0:
                seen = parse_sockaddr(
                    memory.read(buffer, min(room, SOCKADDR_IN6_SIZE)), short_forms=True
                )
            relay_port = seen.port if seen is not None else None
            delivery = self.state.take_delivery(relay_port, listener)
            if delivery is not None:
                relay_port = delivery.relay_port
            connection = self.state.relayed_from(relay_port) if relay_port is not None else None
            if connection is None:
                return None  # a connection made directly to the program's real port
            peer, local = connection.peer.as_family(family), connection.local.as_family(family)
            writes = sockaddr_writes(peer.packed(), buffer, length_pointer, room) if room else ()

            def report(in_place: bool) -> Emulate:
                if delivery is not None:
                    self.connector.delivered(delivery, in_place)
                inode = socket_inode(tid, result)
                if inode is not None:
                    self.state.accepted(inode, RelayedConnection(peer, local, connection.mode))
                return Emulate(result, writes)

            if delivery is None:
                return report(False)
            return Inject(
                _calls_taking_over(result, delivery.descriptor, flags),
                lambda results: report(in_place=results[3] == result),
            )

        return ExitStop(on_accepted, why="accept on a subscribed port")


_SYS_CLOSE, _SYS_FCNTL, _SYS_DUP3, _SYS_PIDFD_OPEN, _SYS_PIDFD_GETFD = (
    SYSCALL_NUMBERS[name] for name in ("close", "fcntl", "dup3", "pidfd_open", "pidfd_getfd")
)
_F_SETFL = 4


def _calls_taking_over(
    accepted: int, descriptor: int, flags: int
) -> tuple[tuple[int, InjectArgs], ...]:
    """Syscalls that, run in the program at accept's exit, replace the accepted relay
    connection (fd `accepted`) by the stolen connection the supervisor holds as `descriptor`:
    pidfd_open(supervisor) -> P, pidfd_getfd(P, descriptor) -> N, N's status flags as accept4
    asked, dup3(N, accepted) (the relay connection closes), close(N), close(P). A failed step
    makes the later ones fail harmlessly on a negative fd, and dup3 tells whether it worked."""
    supervisor = os.getpid()
    nonblocking = flags & socket.SOCK_NONBLOCK
    cloexec = flags & socket.SOCK_CLOEXEC
    return (
        (_SYS_PIDFD_OPEN, (supervisor, 0)),
        (_SYS_PIDFD_GETFD, lambda r: (r[0], descriptor, 0)),
        (_SYS_FCNTL, lambda r: (r[1], _F_SETFL, os.O_RDWR | nonblocking)),
        (_SYS_DUP3, lambda r: (r[1], accepted, cloexec)),
        (_SYS_CLOSE, lambda r: (r[1],)),
        (_SYS_CLOSE, lambda r: (r[0],)),
    )


def traps(context: SessionContext) -> list[Trap]:

    config = context.config
    policy = IncomingPolicy(config.feature.network.incoming, config.agent.flush_connections)
    if not policy.enabled or context.agent is None:
        return []  # targetless: there is no remote traffic to receive
    handlers = IncomingHandlers(policy, context.agent)
    context.end_hooks.append(handlers.sockets.close)
    return [
        Trap(BIND, handlers.bind),
        Trap(LISTEN, handlers.listen),
        Trap(GETSOCKNAME, handlers.getsockname),
        Trap(ACCEPT, handlers.accept),
        Trap(ACCEPT4, handlers.accept),
    ]
