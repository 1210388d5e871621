"""What the outgoing handlers remember about the program's relayed sockets, by socket inode.

Written by the tracer thread, read by it and cleaned up from the agent client's I/O thread
and the relays' thread; single dict operations are atomic, which is all this needs.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from mirrord_trace.config.filters import Protocol
from mirrord_trace.net.sockaddr import InetAddress, IPAddress

RelayKey = tuple[IPAddress, int]


@dataclass
class Flow:
    """A program socket connected (by us) to a relay instead of `peer`."""

    protocol: Protocol
    peer: InetAddress  # the destination the program asked for
    local: InetAddress | None  # the target-side address; None: the kernel's answer will do
    stream_id: int | None = None
    tgid: int = 0


@dataclass
class UdpRoute:
    """Datagrams from one unconnected program socket to one remote destination."""

    relay: tuple[str, int]  # where the program's datagrams are sent instead
    stream_id: int
    tgid: int


@dataclass
class FlowTable:
    connected: dict[int, Flow] = field(default_factory=dict)  # inode -> flow
    udp_routes: dict[tuple[int, InetAddress], UdpRoute] = field(default_factory=dict)
    # Relay address -> the destination it stands for: replies "from" a relay are rewritten.
    relay_peers: dict[RelayKey, InetAddress] = field(default_factory=dict)
    # UDP sockets that have talked to a relay (their recvfrom/recvmsg are rewritten):
    # inode -> the process that has it.
    relayed_udp: dict[int, int] = field(default_factory=dict)
    # inode -> errno a non-blocking connect failed with, until SO_ERROR (or connect) reports it.
    pending_errors: dict[int, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def forget_connected(self, inode: int) -> None:
        self.connected.pop(inode, None)
        self.relayed_udp.pop(inode, None)

    def forget_udp_route(self, inode: int, destination: InetAddress) -> None:
        self.udp_routes.pop((inode, destination), None)
