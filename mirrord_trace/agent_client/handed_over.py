"""A connection the agent handed over whole (HANDOVER): relayed socket to socket to its local
end by the I/O thread, with no frame and no agent in its path."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

from mirrord_trace.agent_client.local_stream import (
    LocalStream,
    StreamHost,
    refuse_local_end,
)
from mirrord_trace.agent_client.relay_end import RelayEnd


class HandedOver(LocalStream):
    """A connection the agent handed over whole, relayed socket to socket to its local end
    (I/O thread only). Same life as a stream for the caller (attach_stream, drop_stream,
    on_finished, local_done); FIN and reset travel as they do through a stream: an end's
    FIN shuts the other end's sending side once everything before it went out, an error on
    either end resets both."""

    def __init__(self, client: StreamHost, stream_id: int, remote: socket.socket) -> None:
        self.client = client
        self.stream_id = stream_id
        self.local_done = threading.Event()
        self.on_finished: Callable[[], None] | None = None
        self.finished = False
        remote.setblocking(False)
        self.remote = RelayEnd(self, remote, client.receive_buffer)
        self.local: RelayEnd | None = None

    def ends(self) -> tuple[RelayEnd, ...]:
        return (self.remote,) if self.local is None else (self.remote, self.local)

    def attach(self, sock: socket.socket, on_finished: Callable[[], None] | None) -> None:
        self.on_finished = on_finished
        if self.finished:
            refuse_local_end(sock, on_finished)
            return
        sock.setblocking(False)
        self.local = RelayEnd(self, sock, self.client.receive_buffer)
        self.local.peer, self.remote.peer = self.remote, self.local

    def fin_passed(self, end: RelayEnd) -> None:
        """`end`'s sending side was shut: the FIN of the other side went through."""
        if end is self.remote:  # the program's end of file reached the real client
            self.local_done.set()
        if self.local is not None and self.local.shut and self.remote.shut:
            self.finish()

    def reset(self, code: int, message: str) -> None:
        """The local side gives up on the connection: the real client sees a reset."""
        self.abort()

    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(end.sock for end in self.ends())
