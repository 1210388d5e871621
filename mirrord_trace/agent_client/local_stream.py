"""What every stream the client keeps has in common: the local end handed to the program
(AgentStream) and the one way a stream ends (LocalStream.finish / abort)."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from mirrord_trace.protocol import Message

# SO_LINGER on with a zero timeout: close() sends a TCP reset instead of a FIN.
_LINGER_RESET = struct.pack("ii", 1, 0)


@dataclass
class AgentStream:
    """A stream as the local side sees it: `socket` is the end to hand to the program.

    Whatever the program writes to `socket` goes to the remote peer and the other way round;
    a TCP stream is a SOCK_STREAM pair, a UDP stream a SOCK_SEQPACKET pair (one packet per
    datagram). Closing `socket` (everywhere it was passed to) ends the stream.
    """

    stream_id: int
    socket: socket.socket
    info: dict[str, Any] = field(default_factory=dict)



class StreamHost(Protocol):
    """What a stream needs of the client that carries it (I/O thread only)."""

    # Where the I/O thread receives into: what is read is passed on before the next read.
    receive_buffer: memoryview

    def send_quietly(self, message: Message) -> None: ...

    def forget_stream(self, stream: LocalStream) -> None: ...


def reset_on_close(sock: socket.socket) -> None:
    """Make close() send a TCP reset (for TCP sockets; other kinds just close)."""
    if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)


def refuse_local_end(sock: socket.socket, on_finished: Callable[[], None] | None) -> None:
    """A local end that came after its stream ended (reset by the agent, or the session is
    gone): it is reset, as the peer would have, and `on_finished` runs as for any stream."""
    reset_on_close(sock)
    sock.close()
    if on_finished is not None:
        on_finished()


class LocalStream:
    """What a stream (relayed in frames, or handed over whole) and its local sockets have in
    common at the end: finished once, with `local_done` set, forgotten by the client, its
    sockets closed (after a reset, with SO_LINGER 0), then `on_finished`."""

    client: StreamHost
    stream_id: int
    local_done: threading.Event
    on_finished: Callable[[], None] | None
    finished: bool

    def sockets(self) -> tuple[socket.socket, ...]:
        raise NotImplementedError

    def abort(self) -> None:
        """The peer reset the stream (or the agent is gone): reset the local end too, so that a
        program on a TCP relay sees ECONNRESET as it would from the real peer, not an orderly
        end of file."""
        for sock in self.sockets():
            reset_on_close(sock)
        self.finish()

    def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        self.local_done.set()
        self.client.forget_stream(self)
        for sock in self.sockets():
            sock.close()
        if self.on_finished is not None:
            self.on_finished()
