"""incoming.subscribe / incoming.unsubscribe: the agent's side of incoming traffic.

One IncomingService per agent process owns the mirror hub (packet capture) and the steal hub
(listener, rules, guardian); sessions subscribe to ports through it. A session's subscriptions
end with the session, so the rules of a client that vanished (its supervisor was killed) are
gone as soon as the agent notices the connection closed.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

from agent.context import ServerContext, SessionContext, log
from agent.http.filter import Filter, from_subscribe_fields
from agent.http.relay import Streams, loopback_pair
from agent.incoming.mirror import MirrorHub, MirrorStream
from agent.incoming.steal import StealHub
from agent.incoming.stolen import StolenConnection
from agent.net.streams import TcpStream
from mirrord_trace.protocol import HANDOVER, StreamOpen
from mirrord_trace.protocol.requests import InvalidRequest

_subscription_ids = itertools.count(1)
S = TypeVar("S", MirrorStream, StolenConnection, TcpStream)


@dataclass(eq=False)
class Subscription:
    """One port a session subscribed to; also the receiver the hubs hand connections to."""

    owner: SessionIncoming
    id: int
    port: int
    mode: str
    http_filter: Filter | None = None
    # The client asked for stolen connections whole, as descriptors (see agent/session.py).
    handover: bool = False

    # -- mirror --
    def open_copy(self, info: dict[str, Any]) -> MirrorStream | None:
        session = self.owner.session
        return self.owner.open_stream(self, info, lambda stream: MirrorStream(stream, session))

    # -- steal --
    def take_connection(self, info: dict[str, Any], connection: StolenConnection) -> bool:
        session = self.owner.session
        handover = self.handover and session.takes_descriptors
        if handover and self.owner.hand_over(self, info, connection):
            return True
        stream = self.owner.open_stream(self, info, lambda sid: connection.bridge(sid, session))
        return stream is not None

    async def open_program_stream(self, info: dict[str, Any]) -> Streams | None:
        """A connection to the program, for the requests a filter sends there. A client on
        this machine that takes handovers gets one end of a loopback TCP pair as itself (no
        frame carries its bytes); otherwise the far end of a socket pair is bridged like a
        stolen connection. The near end is the filter's upstream."""
        session = self.owner.session
        if self.handover and session.takes_descriptors:
            near, far = await loopback_pair()
            try:
                if self.owner.hand_over_socket(self, info, far):
                    return await asyncio.open_connection(sock=near)
            finally:
                far.close()  # the client holds its own duplicate
            near.close()
        near, far = socket.socketpair()
        far_reader, far_writer = await asyncio.open_connection(sock=far)
        stream = self.owner.open_stream(
            self,
            info,
            lambda stream_id: TcpStream(stream_id, far_reader, far_writer, self.owner.session),
        )
        if stream is None:
            far_writer.close()
            near.close()
            return None
        return await asyncio.open_connection(sock=near)


@dataclass(eq=False)
class SessionIncoming:
    """A session's subscriptions and the ids of the streams the agent opens to it."""

    session: SessionContext
    subscriptions: dict[int, Subscription] = field(default_factory=dict)
    _stream_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(2, 2))
    closed: bool = False

    def open_stream(
        self, subscription: Subscription, info: dict[str, Any], make: Callable[[int], S]
    ) -> S | None:
        """Announce a new agent-opened stream and attach `make(stream_id)` to the session."""
        if self.closed or subscription.id not in self.subscriptions:
            return None
        stream_id = next(self._stream_ids)
        stream = make(stream_id)
        self.session.send(StreamOpen(stream_id, {**info, "subscription": subscription.id}))
        self.session.attach_stream(stream)
        return stream

    def hand_over(
        self, subscription: Subscription, info: dict[str, Any], connection: StolenConnection
    ) -> bool:
        """Give the client the connection itself (its descriptor rides on the StreamOpen):
        the agent is then out of its path. False when it cannot go now (it is bridged)."""
        if not self.hand_over_socket(subscription, info, connection):
            return False
        connection.handed_over()
        return True

    def hand_over_socket(
        self,
        subscription: Subscription,
        info: dict[str, Any],
        sock: StolenConnection | socket.socket,
    ) -> bool:
        """Send the StreamOpen with `sock`'s descriptor; False when it cannot go now."""
        if self.closed or subscription.id not in self.subscriptions:
            return False
        stream_id = next(self._stream_ids)
        info = {**info, "subscription": subscription.id, HANDOVER: True}
        return self.session.send_descriptor(StreamOpen(stream_id, info), sock.fileno())


class IncomingService:
    def __init__(self, log: Callable[[str], None]) -> None:
        self._log = log
        self.mirror = MirrorHub(log)
        self.steal = StealHub(log)
        self._sessions: WeakKeyDictionary[SessionContext, SessionIncoming] = WeakKeyDictionary()
        self._tasks: set[asyncio.Future[None]] = set()

    def _for(self, session: SessionContext) -> SessionIncoming:
        state = self._sessions.get(session)
        if state is None:
            state = SessionIncoming(session)
            self._sessions[session] = state
            session.close_callbacks.append(lambda: self.session_closed(session))
            session.suspend_callbacks.append(lambda: self.session_suspended(session))
            session.resume_callbacks.append(lambda: self.session_resumed(session))
        return state

    def session_suspended(self, session: SessionContext) -> None:
        """The client went silent (stopped, asleep): its stolen ports go back to the target,
        whose own server answers meanwhile, instead of connections waiting for nobody."""
        state = self._sessions.get(session)
        for subscription in list(state.subscriptions.values()) if state else ():
            if subscription.mode == "steal":
                self.steal.remove(subscription.port, subscription)
                self._log(f"port {subscription.port} given back to the target meanwhile")

    def session_resumed(self, session: SessionContext) -> None:
        """The client is back: the ports it stole are stolen again."""
        state = self._sessions.get(session)
        for subscription in list(state.subscriptions.values()) if state else ():
            if subscription.mode == "steal":
                task = asyncio.ensure_future(self._steal_again(subscription))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _steal_again(self, subscription: Subscription) -> None:
        if subscription.owner.closed or subscription.id not in subscription.owner.subscriptions:
            return
        try:
            await self.steal.add(subscription.port, subscription)
        except OSError as error:  # another session took the port meanwhile
            self._log(f"port {subscription.port} could not be stolen again: {error.strerror}")
            return
        self._log(f"port {subscription.port} stolen again")

    async def subscribe(self, session: SessionContext, fields: dict[str, Any]) -> dict[str, Any]:
        port: int = fields["port"]
        if not 1 <= port <= 65535:
            raise InvalidRequest(errno.EINVAL, f"port {port} is out of range")
        mode: str = fields["mode"]
        http_filter = from_subscribe_fields(fields)
        if http_filter is not None and mode != "steal":
            raise InvalidRequest(errno.EINVAL, "an HTTP filter only applies when stealing")
        state = self._for(session)
        subscription = Subscription(
            state, next(_subscription_ids), port, mode, http_filter, fields["handover"]
        )
        state.subscriptions[subscription.id] = subscription
        try:
            if mode == "mirror":
                self.mirror.add(port, subscription)
            else:
                await self.steal.add(
                    port, subscription, override=fields["override"], flush=fields["flush"]
                )
        except BaseException:
            state.subscriptions.pop(subscription.id, None)
            raise
        if state.closed:  # the session ended while the rules were being added
            self._drop(subscription)
        return {"subscription": subscription.id}

    def unsubscribe(self, session: SessionContext, fields: dict[str, Any]) -> dict[str, Any]:
        state = self._sessions.get(session)
        subscription = state.subscriptions.get(fields["subscription"]) if state else None
        if subscription is None:
            raise InvalidRequest(errno.ENOENT, f"no subscription {fields['subscription']}")
        self._drop(subscription)
        return {}

    def session_closed(self, session: SessionContext) -> None:
        state = self._sessions.pop(session, None)
        if state is None:
            return
        state.closed = True
        for subscription in list(state.subscriptions.values()):
            self._drop(subscription)

    def _drop(self, subscription: Subscription) -> None:
        subscription.owner.subscriptions.pop(subscription.id, None)
        if subscription.mode == "mirror":
            self.mirror.remove(subscription.port, subscription)
        else:
            self.steal.remove(subscription.port, subscription)

    def close(self) -> None:
        """The agent is stopping: every rule goes now."""
        for session in list(self._sessions):
            self.session_closed(session)
        self.mirror.close()
        self.steal.close()


_services: WeakKeyDictionary[ServerContext, IncomingService] = WeakKeyDictionary()


def service_for(server: ServerContext) -> IncomingService:
    service = _services.get(server)
    if service is None:
        service = IncomingService(log)
        _services[server] = service
    return service
