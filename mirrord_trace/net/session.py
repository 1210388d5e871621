"""NetSession: everything the outgoing handlers share during one run, and its clean-up."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from mirrord_trace.config.filters import Protocol
from mirrord_trace.handlers.dns import DnsQueryRouter, prepare_parser
from mirrord_trace.net.events import EventThread
from mirrord_trace.net.flows import FlowTable
from mirrord_trace.net.names import ResolvedNames
from mirrord_trace.net.policy import OutgoingPolicy
from mirrord_trace.net.relays import TcpRelay
from mirrord_trace.net.tracee_socket import TraceeSockets, inodes_of_process

if TYPE_CHECKING:
    from mirrord_trace.agent_client import AgentClient
    from mirrord_trace.config import Config
    from mirrord_trace.net.dns_relay import DnsRelay, Nameservers

# How long the end of a run waits for connections to hand on what the program sent.
DRAIN_TIMEOUT = 5.0
# A stream the agent opened for a thread that then vanished is dropped after this long.
UNCLAIMED_STREAM_TIMEOUT = 60.0
# How often streams and UDP routes the program can no longer use are looked for.
SWEEP_INTERVAL = 30.0


class NetSession:
    def __init__(self, config: Config, client: AgentClient) -> None:
        network = config.feature.network
        self.client = client
        self.names = ResolvedNames()
        # feature.network.outgoing.unix_streams: Unix socket paths connected in the target.
        self.unix_streams = network.outgoing.unix_streams
        self.router = DnsQueryRouter(network.dns)
        self.policy = OutgoingPolicy(
            network.outgoing,
            network.dns,
            self.names,
            self._target_nameservers,
            _filter_addresses(network.outgoing, client),
        )
        self.sockets = TraceeSockets()
        self.flows = FlowTable()
        self.tcp_relay = TcpRelay()
        self.events = EventThread()
        self._nameservers: Nameservers | None = None
        self._dns: DnsRelay | None = None
        self._lock = threading.Lock()
        self._sending: list[threading.Event] = []
        self._prune_at = 64
        self._unclaimed: dict[int, float] = {}
        self._sweeping = False
        if self.router.reads_queries or self.policy.uses_host_names:
            prepare_parser()
        if self.policy.uses_host_names:
            self._learn_target_hosts_file()

    # -- DNS --
    @property
    def nameservers(self) -> Nameservers:
        with self._lock:
            if self._nameservers is None:
                from mirrord_trace.net.dns_relay import Nameservers

                self._nameservers = Nameservers(self.client)
            return self._nameservers

    def _target_nameservers(self) -> frozenset[Any]:
        return frozenset(self.nameservers.target)

    @property
    def dns(self) -> DnsRelay:
        nameservers = self.nameservers
        with self._lock:
            if self._dns is None:
                from mirrord_trace.net.dns_relay import DnsRelay

                names = self.names if self.policy.uses_host_names else None
                self._dns = DnsRelay(self.events, self.client, self.router, nameservers, names)
            return self._dns

    def _learn_target_hosts_file(self) -> None:
        try:
            future = self.client.request_async("fs.open_read", path="/etc/hosts")
        except Exception:
            return

        def learn(done: Future[dict[str, Any]]) -> None:
            if done.exception() is None:
                content = bytes(done.result().get("content", b""))
                self.names.record_hosts_file(content.decode(errors="replace"))

        future.add_done_callback(learn)

    # -- streams --
    def track_sending(self, sent_all: threading.Event) -> None:
        """Remember a connection whose program-side bytes the end of the run waits for."""
        with self._lock:
            if len(self._sending) >= self._prune_at:
                self._sending = [event for event in self._sending if not event.is_set()]
                self._prune_at = max(64, 2 * len(self._sending))
            self._sending.append(sent_all)

    def expect_claim(self, stream_id: int) -> Callable[[], None]:
        """A stream started for a parked thread: the thread claims it when it completes (call
        the returned function); one whose thread vanished (killed meanwhile) is dropped by the
        next sweep after UNCLAIMED_STREAM_TIMEOUT."""
        self._unclaimed[stream_id] = time.monotonic()
        self.start_sweeping()
        return lambda: self._unclaimed.pop(stream_id, None)

    def start_sweeping(self) -> None:
        """Make sure _sweep runs every SWEEP_INTERVAL (from the first relayed socket on)."""
        if self._sweeping:
            return
        with self._lock:
            if self._sweeping:
                return
            self._sweeping = True
        loop = self.events.loop
        loop.call_soon_threadsafe(loop.call_later, SWEEP_INTERVAL, self._sweep)

    def _sweep(self) -> None:
        """Drop what the program can no longer use: streams no parked thread claimed, and UDP
        routes and connected UDP flows whose program socket is closed."""
        now = time.monotonic()
        for stream_id, started in list(self._unclaimed.items()):
            if now - started > UNCLAIMED_STREAM_TIMEOUT:
                self._unclaimed.pop(stream_id, None)
                self.client.drop_stream(stream_id)
        alive: dict[int, set[int]] = {}

        def open_sockets(tgid: int) -> set[int]:
            if tgid not in alive:
                alive[tgid] = inodes_of_process(tgid)
            return alive[tgid]

        for (inode, destination), route in list(self.flows.udp_routes.items()):
            if inode not in open_sockets(route.tgid):
                self.flows.forget_udp_route(inode, destination)
                self.client.drop_stream(route.stream_id)
        for inode, flow in list(self.flows.connected.items()):
            # TCP flows end with their stream (or, for DNS over TCP, their connection).
            if flow.protocol is Protocol.UDP and inode not in open_sockets(flow.tgid):
                self.flows.forget_connected(inode)
                if flow.stream_id is not None:
                    self.client.drop_stream(flow.stream_id)
        for inode, tgid in list(self.flows.relayed_udp.items()):
            if inode not in open_sockets(tgid):
                self.flows.relayed_udp.pop(inode, None)
        self.events.loop.call_later(SWEEP_INTERVAL, self._sweep)

    # -- the end of the run --
    def end(self) -> None:
        """The program has ended: let its connections deliver what it sent, then close."""
        deadline = time.monotonic() + DRAIN_TIMEOUT
        with self._lock:
            sending, self._sending = self._sending, []
        for sent_all in sending:
            if not sent_all.wait(max(0.0, deadline - time.monotonic())):
                break
        if self._dns is not None:
            self._dns.close()
        self.tcp_relay.close()
        self.events.close()
        self.sockets.close()


def _filter_addresses(outgoing: Any, client: AgentClient) -> Callable[[str], Any] | None:
    """How the outgoing filter's host names are resolved: on the side the filter names."""
    from mirrord_trace.config.model import FilterSide
    from mirrord_trace.net.filter_names import FilterNames, local_lookup, remote_lookup

    if outgoing.filter is None:
        return None
    remote = outgoing.filter.side is FilterSide.REMOTE
    return FilterNames(remote_lookup(client) if remote else local_lookup).addresses


def net_session(config: Config, client: AgentClient, extras: dict[str, Any]) -> NetSession:
    """The run's NetSession (one per run, shared by the families that need it)."""
    session = extras.get("net")
    if session is None:
        session = extras["net"] = NetSession(config, client)
    return session
