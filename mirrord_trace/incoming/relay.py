"""Connections the agent opens (stolen connections, mirrored copies) -> the program.

The program's listening socket is a real one on this machine (bound to a free port by the bind
handler); each incoming stream becomes a real TCP connection to it, so the program accepts it
like any other. Before connecting, the connector notes its own port: the accept handler finds
the original client's address by it.

A stolen connection's TCP socket is handed straight to the agent client's pump (no extra hop:
bytes go from the agent connection to the program in one thread). With an agent on this
machine (a local target), a connection stolen whole comes as itself (HANDOVER in the protocol):
the client relays it straight to that socket, and the agent and its stream are out of the path
-- one relaying process instead of two per request. MIRRORD_TRACE_INCOMING_HANDOVER=0 turns
this off (to measure or test the stream path). A mirrored copy goes through a socket pair and
a small asyncio relay that reads the program's answers and drops them (the target has answered
the real client already), so they never travel back to the agent.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mirrord_trace.incoming.state import Delivery, IncomingState, Listener, RelayedConnection
from mirrord_trace.net.sockaddr import InetAddress, from_socket_tuple
from mirrord_trace.protocol.byte_copy import copy_until_eof

if TYPE_CHECKING:
    # Imported where a mirrored copy needs it: every session with a target builds the incoming
    # family, and asyncio is ~30 ms of an `exec` start-up that mirrors nothing.
    import asyncio

_READ_SIZE = 256 * 1024
HANDOVER_ENV = "MIRRORD_TRACE_INCOMING_HANDOVER"


def _endpoint(value: object) -> InetAddress:
    host, port = value  # type: ignore[misc]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return from_socket_tuple((host, port), family)


class IncomingConnector:
    """AgentClient.on_incoming_stream: gives each incoming stream its connection to the program.

    Runs in the agent client's I/O thread, so it never blocks: the connect is non-blocking
    (to a loopback listener it completes at once; the pump waits for it otherwise).
    """

    def __init__(self, client: Any, state: IncomingState) -> None:
        self.client = client
        self.state = state
        self.mirror_relay = MirrorRelay()

    @property
    def takes_handovers(self) -> bool:
        """Whether to ask the agent for stolen connections whole (see the module's doc)."""
        return bool(self.client.passes_descriptors) and os.environ.get(HANDOVER_ENV) != "0"

    def on_incoming_stream(self, stream_id: int, info: dict[str, Any]) -> None:
        listener = self.state.route(int(info.get("subscription", 0)))
        if listener is None:
            self.client.drop_stream(stream_id, errno.ECONNREFUSED)
            return
        connection = RelayedConnection(
            _endpoint(info["peer"]), _endpoint(info["local"]), str(info.get("mode"))
        )
        descriptor = None
        if connection.mode != "mirror":
            # Held until the program accepts the relay's connection: the accept handler then
            # puts the stolen connection itself in its place and no byte is relayed (delivered).
            descriptor = self.client.handed_over_descriptor(stream_id)
        try:
            sock, relay_port = self._connect(listener, connection, stream_id, descriptor)
        except OSError:
            # The program closed its listener: the connection is refused, as it would be.
            self.client.drop_stream(stream_id, errno.ECONNREFUSED)
            return

        forget = functools.partial(self.state.relay_closed, relay_port)
        if descriptor is not None:
            return
        if connection.mode != "mirror":
            self.client.attach_stream(stream_id, sock, forget)
            return
        ours, theirs = socket.socketpair()
        self.client.attach_stream(stream_id, ours)
        self.mirror_relay.start(theirs, sock, forget)

    def delivered(self, delivery: Delivery, in_place: bool) -> None:
        """The program accepted the doorbell of `delivery` (tracer thread). In place: its fd now
        is the stolen connection, and the supervisor's copies go. Otherwise (the kernel would
        not pass the fd, e.g. pidfd_getfd forbidden): relayed through the doorbell as usual."""
        if in_place:
            self.client.release_handed_over(delivery.stream_id)
            delivery.doorbell.close()
            self.state.relay_closed(delivery.relay_port)
            return

        forget = functools.partial(self.state.relay_closed, delivery.relay_port)
        self.client.attach_stream(delivery.stream_id, delivery.doorbell, forget)

    def _connect(
        self,
        listener: Listener,
        connection: RelayedConnection,
        stream_id: int,
        descriptor: int | None,
    ) -> tuple[socket.socket, int]:
        target = listener.connect_address
        sock = socket.socket(target.family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((str(target.socket_ip), 0))
            relay_port = sock.getsockname()[1]
            # Noted before connecting: the program may accept before connect() returns here.
            self.state.relayed(relay_port, connection)
            if descriptor is not None:
                delivery = Delivery(stream_id, descriptor, sock, relay_port, listener)
                self.state.awaiting_accept(delivery)
            code = sock.connect_ex(target.sockaddr_tuple())
            if code not in (0, errno.EINPROGRESS):
                self.state.relay_closed(relay_port)
                self.state.take_delivery(relay_port, listener)
                raise OSError(code, "cannot connect to the program's listener")
        except BaseException:
            sock.close()
            raise
        return sock, relay_port


async def _discard(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while await reader.read(_READ_SIZE):
            pass


class MirrorRelay:
    """Mirrored copies -> the program, answers dropped; one asyncio loop in a daemon thread."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._start_lock = threading.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, copy: socket.socket, program: socket.socket, done: Callable[[], None]) -> None:
        loop = self._running_loop()
        loop.call_soon_threadsafe(self._spawn, copy, program, done)

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        import asyncio

        with self._start_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="mirrord-trace-mirror", daemon=True
                )
                thread.start()
                self._loop = loop
            return self._loop

    def _spawn(self, copy: socket.socket, program: socket.socket, done: Callable[[], None]) -> None:
        import asyncio

        task = asyncio.get_running_loop().create_task(self._relay(copy, program, done))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _relay(
        self, copy: socket.socket, program: socket.socket, done: Callable[[], None]
    ) -> None:
        import asyncio

        # `program` may still be connecting: the transport buffers until it can write.
        try:
            copy.setblocking(False)
            to_program = await asyncio.open_connection(sock=program, limit=_READ_SIZE)
            from_agent = await asyncio.open_connection(sock=copy, limit=_READ_SIZE)
        except OSError:
            copy.close()
            program.close()
            done()
            return
        try:
            await asyncio.gather(
                copy_until_eof(from_agent[0], to_program[1], _READ_SIZE), _discard(to_program[0])
            )
        finally:
            to_program[1].close()
            from_agent[1].close()
            done()
