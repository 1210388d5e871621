"""What a session knows about the program's listeners and the connections relayed to them.

Written by the tracer thread (bind, listen, accept) and the relay thread (connections it
makes), read by both; one lock guards it. Sockets are keyed by inode (see net.tracee_socket).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections import OrderedDict
from dataclasses import dataclass

from mirrord_trace.incoming.policy import PortDecision
from mirrord_trace.net.sockaddr import InetAddress

# Accepted connections remembered for getsockname; close() is not trapped, so the oldest go.
MAX_ACCEPTED = 4096


@dataclass
class Listener:
    inode: int
    requested: InetAddress  # what the program asked for: getsockname reports it
    actual: InetAddress  # where the socket really is bound on this machine
    decision: PortDecision
    subscription: int | None = None

    @property
    def connect_address(self) -> InetAddress:
        """Where a relay connects to reach this listener."""
        if self.actual.is_unspecified:
            loopback = "127.0.0.1" if self.actual.family == socket.AF_INET else "::1"
            return InetAddress(ipaddress.ip_address(loopback), self.actual.port, self.actual.family)
        return self.actual


@dataclass(frozen=True)
class Delivery:
    """A stolen connection waiting for the program to accept the relay's connection standing
    for it (the doorbell), to be put in that connection's place in the program."""

    stream_id: int
    descriptor: int  # the supervisor's copy of the stolen connection
    doorbell: socket.socket  # the supervisor's end of the connection to the program's listener
    relay_port: int
    listener: Listener


@dataclass(frozen=True)
class RelayedConnection:
    """A connection the relay made to the program, as the target saw the original."""

    peer: InetAddress  # the remote client
    local: InetAddress  # the target's address and port it reached
    mode: str


class IncomingState:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: dict[int, Listener] = {}
        self._by_subscription: dict[int, Listener] = {}
        self._subscription_of_port: dict[int, int] = {}
        self._relayed: dict[int, RelayedConnection] = {}  # by the relay socket's local port
        self._accepted: OrderedDict[int, RelayedConnection] = OrderedDict()
        self._deliveries: OrderedDict[int, Delivery] = OrderedDict()  # by relay port

    # -- listeners (tracer thread) --
    def add_listener(self, listener: Listener) -> None:
        with self._lock:
            self._listeners[listener.inode] = listener

    def listener(self, inode: int | None) -> Listener | None:
        if inode is None:
            return None
        return self._listeners.get(inode)

    def subscription_for(self, remote_port: int) -> int | None:
        return self._subscription_of_port.get(remote_port)

    def subscribed(self, listener: Listener, subscription: int) -> None:
        """`listener` now receives `subscription`'s connections (the newest listener wins)."""
        with self._lock:
            listener.subscription = subscription
            self._by_subscription[subscription] = listener
            self._subscription_of_port[listener.decision.remote_port] = subscription

    # -- relayed connections (relay thread, then tracer thread at accept) --
    def route(self, subscription: int) -> Listener | None:
        return self._by_subscription.get(subscription)

    def relayed(self, relay_port: int, connection: RelayedConnection) -> None:
        with self._lock:
            self._relayed[relay_port] = connection

    def relay_closed(self, relay_port: int) -> None:
        with self._lock:
            self._relayed.pop(relay_port, None)

    def relayed_from(self, relay_port: int) -> RelayedConnection | None:
        return self._relayed.get(relay_port)

    def awaiting_accept(self, delivery: Delivery) -> None:
        with self._lock:
            self._deliveries[delivery.relay_port] = delivery

    def take_delivery(self, relay_port: int | None, listener: Listener) -> Delivery | None:
        """The delivery behind the accepted relay connection; without its port (accept was
        given no address buffer) the listener's oldest, as its backlog hands them out."""
        with self._lock:
            if relay_port is not None:
                return self._deliveries.pop(relay_port, None)
            for port, delivery in self._deliveries.items():
                if delivery.listener is listener:
                    return self._deliveries.pop(port)
            return None

    def accepted(self, inode: int, connection: RelayedConnection) -> None:
        with self._lock:
            self._accepted[inode] = connection
            while len(self._accepted) > MAX_ACCEPTED:
                self._accepted.popitem(last=False)

    def accepted_connection(self, inode: int | None) -> RelayedConnection | None:
        return None if inode is None else self._accepted.get(inode)
