"""A stream relayed in frames: bytes between the agent and one local socket, within the
stream's flow-control window both ways (I/O thread only)."""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import threading
from collections import deque
from collections.abc import Callable

from mirrord_trace.agent_client.local_stream import (
    LocalStream,
    StreamHost,
    refuse_local_end,
)
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


class StreamPump(LocalStream):
    """Moves one stream's bytes between the agent and the local socket; reader thread only.

    `sock` is None while a stream started with start_stream waits for its local end: what the
    agent sends meanwhile waits in the outbox (at most one window, by flow control).
    """

    def __init__(
        self, client: StreamHost, stream_id: int, sock: socket.socket | None, datagram: bool
    ):
        self.client = client
        self.stream_id = stream_id
        self.sock = sock
        self.datagram = datagram
        # Set once the local side has nothing more to send (end of file, or the stream ended).
        self.local_done = threading.Event()
        self.on_finished: Callable[[], None] | None = None
        self.credit = SendCredit()
        self.window = ReceiveWindow()
        self.outbox: deque[bytes] = deque()
        self.active = False  # reading from the program starts once the agent has the stream
        self.watched = 0  # the events the I/O thread's selector waits for (AgentClient._watch)
        self.sent_close = False
        self.received_close = False
        self.finished = False

    def interest(self) -> int:
        mask = 0
        # A datagram cannot be split, so reading one needs room for the largest.
        needed = MAX_DATA_CHUNK if self.datagram else 1
        if self.active and not self.sent_close and self.credit.available >= needed:
            mask |= selectors.EVENT_READ
        if self.outbox:
            mask |= selectors.EVENT_WRITE
        return mask if self.sock is not None else 0

    def on_readable(self) -> None:
        assert self.sock is not None
        size = MAX_DATA_CHUNK if self.datagram else min(MAX_DATA_CHUNK, self.credit.available)
        buffer = self.client.receive_buffer
        try:
            data = bytes(buffer[: self.sock.recv_into(buffer, size)])
        except BlockingIOError:
            return
        except OSError as error:
            self.reset(error.errno or errno.ECONNRESET, f"local socket: {error.strerror}")
            return
        if not data:
            # The program shut down its sending side (or closed the socket).
            self.sent_close = True
            self.local_done.set()
            self.client.send_quietly(StreamClose(self.stream_id))
            self._finish_if_done()
            return
        self.credit.take(len(data))
        self.client.send_quietly(StreamData(self.stream_id, data))

    def on_data(self, data: bytes) -> None:
        try:
            self.window.on_data(len(data))
        except FlowControlViolation as violation:
            self.reset(errno.EPROTO, str(violation))
            return
        self.outbox.append(data)
        self.flush()

    def flush(self) -> None:
        if self.sock is None:
            return
        while self.outbox:
            chunk = self.outbox[0]
            try:
                sent = self.sock.send(chunk)
            except BlockingIOError:
                return
            except OSError as error:
                # The program closed its end: nobody will read what the peer sends any more.
                self.reset(error.errno or errno.EPIPE, "the program closed its socket")
                return
            if sent == len(chunk) or self.datagram:
                self.outbox.popleft()
            else:
                self.outbox[0] = chunk[sent:]
            grant = self.window.on_consumed(sent if not self.datagram else len(chunk))
            if grant:
                self.client.send_quietly(StreamCredit(self.stream_id, grant))
        if self.received_close:
            self._shutdown_write()
            self._finish_if_done()

    def on_credit(self, amount: int) -> None:
        try:
            self.credit.grant(amount)
        except FlowControlViolation as violation:
            self.reset(errno.EPROTO, str(violation))

    def on_close(self) -> None:
        self.received_close = True
        if not self.outbox and self.sock is not None:
            self._shutdown_write()
            self._finish_if_done()

    def _shutdown_write(self) -> None:
        # The program may have closed its end already.
        with contextlib.suppress(OSError):
            if self.sock is not None:
                self.sock.shutdown(socket.SHUT_WR)

    def _finish_if_done(self) -> None:
        if self.sent_close and self.received_close and not self.outbox:
            self.finish()

    def reset(self, code: int, message: str) -> None:
        """Abort the stream from this side and tell the agent."""
        if not self.finished:
            self.client.send_quietly(StreamReset(self.stream_id, code, message))
            self.finish()

    def sockets(self) -> tuple[socket.socket, ...]:
        return () if self.sock is None else (self.sock,)

    def attach(self, sock: socket.socket, on_finished: Callable[[], None] | None) -> None:
        """Give a stream started with start_stream its local end (I/O thread)."""
        self.on_finished = on_finished
        if self.finished:  # the agent ended the stream before the local end existed
            refuse_local_end(sock, on_finished)
            return
        sock.setblocking(False)
        self.sock = sock
        self.flush()
        if self.received_close and not self.outbox:
            self._shutdown_write()
            self._finish_if_done()
