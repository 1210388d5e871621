"""Byte streams between the client and sockets the agent opened in the target's namespace.

Flow control, both directions: towards the client the agent sends no more than the client
granted and stops reading the target socket while it has no credit (so the kernel pushes back
on the remote peer); towards the target it grants credit back only once bytes are written
into the target socket, so a slow target peer holds at most one window per stream here.
"""

from __future__ import annotations

import asyncio
import errno
import typing
from typing import Protocol

from mirrord_trace.protocol import (
    MAX_DATA_CHUNK,
    FlowControlViolation,
    Message,
    ReceiveWindow,
    SendCredit,
    StreamClose,
    StreamCredit,
    StreamData,
    StreamReset,
)

# asyncio's socket transports read with recv(256 KiB): CPython mallocs that much for every
# read, which glibc serves with mmap + mremap + munmap (~17 us per read, whatever arrived,
# more than the rest of relaying a small request). The protocols on the data path are
# asyncio.BufferedProtocols that receive into this buffer instead: the event loop runs one
# callback at a time, and each takes what it needs (a copy) before returning.
RECEIVE_BUFFER = memoryview(bytearray(MAX_DATA_CHUNK))


class StreamOwner(Protocol):
    """What a stream needs from the session that carries it (every kind of stream)."""

    def send(self, message: Message) -> None: ...

    def stream_finished(self, stream_id: int) -> None: ...


class PacedStreamOwner(StreamOwner, Protocol):
    """A TCP stream also waits until the session's connection has taken what it sent."""

    async def drain(self) -> None: ...


class ClientCredit:
    """The client's credit, as every stream the agent bridges (TcpStream, UdpStream,
    StolenConnection, MirrorStream) takes it: a grant that breaks flow control resets the
    stream, any other lets `_credit_granted` send more; a reset from the client aborts."""

    stream_id: int
    _credit: SendCredit

    def on_credit(self, amount: int) -> None:
        try:
            self._credit.grant(amount)
        except FlowControlViolation as violation:
            self._fail(errno.EPROTO, str(violation))
            return
        self._credit_granted()

    def on_reset(self) -> None:
        self.abort()

    def _credit_granted(self) -> None:
        """More may go to the client now (nothing to do for a stream that never waits)."""

    def _fail(self, code: int, message: str) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError


class TcpStream(ClientCredit):
    """A connected TCP socket in the target's namespace, bridged to one stream id."""

    def __init__(
        self,
        stream_id: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        owner: PacedStreamOwner,
    ) -> None:
        self.stream_id = stream_id
        self._reader = reader
        self._writer = writer
        self._owner = owner
        self._credit = SendCredit()
        self._credit_arrived = asyncio.Event()
        self._window = ReceiveWindow()
        # Holds at most one window of bytes: the client cannot send more than it was granted.
        self._to_target: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._finished = False
        self._tasks = [
            asyncio.create_task(self._pump_to_client()),
            asyncio.create_task(self._pump_to_target()),
        ]
        for task in self._tasks:
            task.add_done_callback(self._pump_done)

    # -- messages from the client --
    def on_data(self, data: bytes) -> None:
        try:
            self._window.on_data(len(data))
        except FlowControlViolation as violation:
            self._fail(errno.EPROTO, str(violation))
            return
        self._to_target.put_nowait(data)

    def _credit_granted(self) -> None:
        self._credit_arrived.set()

    def on_close(self) -> None:
        self._to_target.put_nowait(None)

    # -- pumps --
    async def _pump_to_client(self) -> None:
        try:
            while True:
                while self._credit.available == 0:
                    self._credit_arrived.clear()
                    await self._credit_arrived.wait()
                data = await self._reader.read(min(MAX_DATA_CHUNK, self._credit.available))
                if not data:
                    self._owner.send(StreamClose(self.stream_id))
                    return
                self._credit.take(len(data))
                self._owner.send(StreamData(self.stream_id, data))
                await self._owner.drain()
        except OSError as error:
            self._fail(error.errno or errno.ECONNRESET, str(error))

    async def _pump_to_target(self) -> None:
        try:
            while True:
                data = await self._to_target.get()
                if data is None:
                    if self._writer.can_write_eof():
                        self._writer.write_eof()
                    return
                self._writer.write(data)
                await self._writer.drain()
                grant = self._window.on_consumed(len(data))
                if grant:
                    self._owner.send(StreamCredit(self.stream_id, grant))
        except OSError as error:
            self._fail(error.errno or errno.EPIPE, str(error))

    def _pump_done(self, _task: asyncio.Task[None]) -> None:
        if all(task.done() for task in self._tasks) and not self._finished:
            self._finish()

    def _fail(self, code: int, message: str) -> None:
        if not self._finished:
            self._owner.send(StreamReset(self.stream_id, code, message))
            self.abort()

    def abort(self) -> None:
        """Drop the stream at once (session gone, or reset by either side)."""
        for task in self._tasks:
            task.cancel()
        self._writer.transport.abort()
        self._finish()

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        self._writer.close()
        self._owner.stream_finished(self.stream_id)


class UdpStream(ClientCredit, asyncio.DatagramProtocol):
    """A connected UDP socket in the target's namespace; one StreamData is one datagram.

    Datagrams from the target that arrive while the client has no credit are dropped, which is
    what UDP does when a receiver falls behind.
    """

    def __init__(self, stream_id: int, owner: StreamOwner) -> None:
        self.stream_id = stream_id
        self._owner = owner
        self._credit = SendCredit()
        self._window = ReceiveWindow()
        self._transport: asyncio.DatagramTransport | None = None
        self._finished = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = typing.cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: object) -> None:
        if self._credit.available >= len(data):
            self._credit.take(len(data))
            self._owner.send(StreamData(self.stream_id, data))

    def error_received(self, exc: Exception) -> None:
        # An ICMP error for one datagram; UDP carries on, so does the stream.
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish()

    def on_data(self, data: bytes) -> None:
        try:
            self._window.on_data(len(data))
        except FlowControlViolation as violation:
            self._fail(errno.EPROTO, str(violation))
            return
        if self._transport is not None:
            self._transport.sendto(data)
        grant = self._window.on_consumed(len(data))
        if grant:
            self._owner.send(StreamCredit(self.stream_id, grant))

    def on_close(self) -> None:
        self.abort()

    def _fail(self, code: int, message: str) -> None:
        self._owner.send(StreamReset(self.stream_id, code, message))
        self.abort()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()
        self._finish()

    def _finish(self) -> None:
        if not self._finished:
            self._finished = True
            self._owner.stream_finished(self.stream_id)


Stream = TcpStream | UdpStream
