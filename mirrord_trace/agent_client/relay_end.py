"""One socket of a connection the agent handed over whole (see handed_over)."""

from __future__ import annotations

import contextlib
import selectors
import socket
from typing import Protocol


class Relay(Protocol):
    """The connection an end belongs to."""

    finished: bool

    def abort(self) -> None: ...

    def fin_passed(self, end: RelayEnd) -> None: ...


class RelayEnd:
    """One socket of a handed-over connection: what it reads goes to `peer`'s socket. Reading
    pauses while the peer cannot take more (its kernel buffer is full), so each direction
    holds at most one receive's worth here and the slow side pushes back on the other."""

    def __init__(self, relay: Relay, sock: socket.socket, buffer: memoryview) -> None:
        self.relay = relay
        self.buffer = buffer  # the I/O thread's receive buffer
        self.sock = sock
        self.peer: RelayEnd | None = None
        self.pending = b""  # read from the peer, not yet taken by this socket
        self.read_done = False  # this socket's peer sent FIN (recv returned b"")
        self.shut = False  # FIN passed on: this socket's sending side is shut
        self.watched = 0  # as StreamPump.watched

    @property
    def finished(self) -> bool:
        return self.relay.finished

    def interest(self) -> int:
        mask = 0
        if self.peer is not None and not self.read_done and not self.peer.pending:
            mask |= selectors.EVENT_READ
        if self.pending:
            mask |= selectors.EVENT_WRITE
        return mask

    def on_readable(self) -> None:
        assert self.peer is not None
        buffer = self.buffer
        try:
            size = self.sock.recv_into(buffer)
        except BlockingIOError:
            return
        except OSError:
            self.relay.abort()
            return
        if size:
            self.peer.send(buffer[:size])
            return
        self.read_done = True
        if not self.peer.pending:
            self.peer.shut_down()

    def send(self, data: memoryview) -> None:
        """Pass on `data` (a view of the receive buffer: what is not sent now is copied)."""
        if self.pending:
            self.pending += data
            return
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.relay.abort()
            return
        self.pending = bytes(data[sent:])

    def flush(self) -> None:
        try:
            sent = self.sock.send(self.pending)
        except BlockingIOError:
            return
        except OSError:
            self.relay.abort()
            return
        self.pending = self.pending[sent:]
        if not self.pending and self.peer is not None and self.peer.read_done:
            self.shut_down()

    def shut_down(self) -> None:
        """Pass the FIN on: everything the other side sent before it has gone out."""
        self.shut = True
        with contextlib.suppress(OSError):  # the other side may have gone already
            self.sock.shutdown(socket.SHUT_WR)
        self.relay.fin_passed(self)
