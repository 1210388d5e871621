"""Connections the agent opens (mirrored copies, stolen connections) -> the program.

The program's listening socket is a real one on this machine (bound to a free port by the bind
handler); each incoming stream becomes a real TCP connection to it, so the program accepts it
like any other. Before connecting, the relay notes its own port: the accept handler finds the
original client's address by it. For a mirrored copy the program's answers are read and
dropped (the target has answered the real client already).

One asyncio loop in one daemon thread serves every connection of the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading

from mirrord_trace.agent_client import AgentStream
from mirrord_trace.incoming.sockaddr import InetAddress
from mirrord_trace.incoming.state import IncomingState, RelayedConnection

_READ_SIZE = 256 * 1024


def _endpoint(value: object) -> InetAddress:
    host, port = value  # type: ignore[misc]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return InetAddress(family, host, int(port))


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_READ_SIZE):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.transport.abort()


async def _discard(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while await reader.read(_READ_SIZE):
            pass


class IncomingRelay:
    def __init__(self, state: IncomingState) -> None:
        self.state = state
        self._loop: asyncio.AbstractEventLoop | None = None
        self._start_lock = threading.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    def on_stream_open(self, stream: AgentStream) -> None:
        """AgentClient.on_stream_open: runs in the client's I/O thread, so it only hands over."""
        loop = self._running_loop()
        loop.call_soon_threadsafe(self._spawn, stream)

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._start_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="mirrord-trace-incoming", daemon=True
                )
                thread.start()
                self._loop = loop
            return self._loop

    def _spawn(self, stream: AgentStream) -> None:
        task = asyncio.get_running_loop().create_task(self._relay(stream))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _relay(self, stream: AgentStream) -> None:
        info = stream.info
        listener = self.state.route(int(info.get("subscription", 0)))
        if listener is None:
            stream.socket.close()
            return
        target = listener.connect_address
        connection = RelayedConnection(
            _endpoint(info["peer"]), _endpoint(info["local"]), str(info.get("mode"))
        )
        sock = socket.socket(target.family, socket.SOCK_STREAM)
        relay_port = 0
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((target.host, 0))
            relay_port = sock.getsockname()[1]
            # Noted before connecting: the program may accept before connect() returns here.
            self.state.relayed(relay_port, connection)
            await asyncio.get_running_loop().sock_connect(sock, target.sockaddr_tuple())
            stream.socket.setblocking(False)
            program = await asyncio.open_connection(sock=sock, limit=_READ_SIZE)
            agent = await asyncio.open_connection(sock=stream.socket, limit=_READ_SIZE)
        except OSError:
            # The program closed its listener: the connection is refused, as it would be.
            sock.close()
            stream.socket.close()
            self.state.relay_closed(relay_port)
            return
        try:
            if connection.mode == "mirror":
                await asyncio.gather(_copy(agent[0], program[1]), _discard(program[0]))
            else:
                await asyncio.gather(_copy(agent[0], program[1]), _copy(program[0], agent[1]))
        finally:
            program[1].close()
            agent[1].close()
            self.state.relay_closed(relay_port)
