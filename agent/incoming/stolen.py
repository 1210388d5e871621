"""One stolen connection, as the steal listener accepted it.

When the connection is meant for a port stolen whole, this protocol *is* the bridge to the
client's stream: bytes from the real client go out as StreamData the moment they arrive (no
reader task, no extra copy), bytes from the program are written straight to the real client.
Flow control as in agent.net.streams: reading pauses while the client has granted no credit, and
credit goes back only for bytes the kernel took, so a slow side holds one window at most.

Otherwise (HTTP filter, or nobody steals the port any more) the connection is handed over as
asyncio streams to the code that needs them, before any byte was read.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable

from agent.net.streams import RECEIVE_BUFFER, ClientCredit, StreamOwner
from mirrord_trace.protocol import (
    MAX_DATA_CHUNK,
    FlowControlViolation,
    ReceiveWindow,
    SendCredit,
    StreamClose,
    StreamCredit,
    StreamData,
    StreamReset,
)

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class StolenConnection(ClientCredit, asyncio.BufferedProtocol):
    """Accepted by the steal listener; `route` decides what becomes of it."""

    def __init__(self, route: Callable[[StolenConnection], None]) -> None:
        self._route = route
        self.transport: asyncio.Transport | None = None
        self.stream_id = 0
        self._owner: StreamOwner | None = None
        self._credit = SendCredit()
        self._window = ReceiveWindow()
        self._held = b""  # from the real client, waiting for credit
        self._ungranted = 0  # written towards the real client while its buffer was full
        self._writing_paused = False
        self._client_ended = False  # the real client sent FIN
        self._program_ended = False  # the stream's other end sent StreamClose
        self._sent_close = False
        self.finished = False

    # -- asyncio --
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._route(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return RECEIVE_BUFFER

    def buffer_updated(self, nbytes: int) -> None:
        if self._owner is None:
            return
        self._held += RECEIVE_BUFFER[:nbytes]  # a copy: the buffer is reused
        self._forward()

    def eof_received(self) -> bool:
        self._client_ended = True
        self._forward()
        return True  # keep the writing side open: the program may still answer

    def connection_lost(self, exc: Exception | None) -> None:
        if self._owner is not None and not self.finished:
            self._owner.send(StreamReset(self.stream_id, errno.ECONNRESET, "the client left"))
        self._finish()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._ungranted:
            amount, self._ungranted = self._ungranted, 0
            self._grant(amount)

    # -- routing --
    def bridge(self, stream_id: int, owner: StreamOwner) -> StolenConnection:
        """Become the bridge of `stream_id` (the caller announces it with StreamOpen)."""
        self.stream_id = stream_id
        self._owner = owner
        return self

    def fileno(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("socket").fileno())

    def handed_over(self) -> None:
        """The client holds the connection now (its own descriptor): the agent lets go of
        it without a word to the real client (closing a duplicate sends nothing)."""
        self.finished = True
        if self.transport is not None:
            self.transport.close()

    def as_streams(self) -> Streams:
        """Hand the connection over as asyncio streams (before anything was read)."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=2**20, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        self.transport.set_protocol(protocol)
        protocol.connection_made(self.transport)
        return reader, asyncio.StreamWriter(self.transport, protocol, reader, loop)

    # -- messages of the client (the program's side) --
    def on_data(self, data: bytes) -> None:
        try:
            self._window.on_data(len(data))
        except FlowControlViolation as violation:
            self._fail(errno.EPROTO, str(violation))
            return
        assert self.transport is not None
        self.transport.write(data)
        if self._writing_paused:
            self._ungranted += len(data)
        else:
            self._grant(len(data))

    def _credit_granted(self) -> None:
        self._forward()

    def on_close(self) -> None:
        self._program_ended = True
        if self.transport is not None and not self.transport.is_closing():
            try:
                self.transport.write_eof()
            except OSError:  # the client left already; raising would end the whole session
                self.abort()
                return
        self._close_if_done()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        self._finish()

    # -- internals --
    def _grant(self, amount: int) -> None:
        grant = self._window.on_consumed(amount)
        if grant and self._owner is not None:
            self._owner.send(StreamCredit(self.stream_id, grant))

    def _forward(self) -> None:
        owner = self._owner
        if owner is None or self.finished:
            return
        held = self._held
        while held and self._credit.available:
            size = self._credit.take(min(len(held), MAX_DATA_CHUNK))
            owner.send(StreamData(self.stream_id, held[:size]))
            held = held[size:]
        self._held = held
        if self.transport is not None:
            if held:
                self.transport.pause_reading()
            elif not self._client_ended:
                self.transport.resume_reading()
        if self._client_ended and not held:
            owner.send(StreamClose(self.stream_id))
            self._client_ended = False  # sent once
            self._sent_close = True
            self._close_if_done()

    def _close_if_done(self) -> None:
        if self._sent_close and self._program_ended and self.transport is not None:
            self.transport.close()
            self._finish()

    def _fail(self, code: int, message: str) -> None:
        if self._owner is not None and not self.finished:
            self._owner.send(StreamReset(self.stream_id, code, message))
        self.abort()

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        if self._owner is not None:
            self._owner.stream_finished(self.stream_id)

