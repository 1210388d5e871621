"""The client's streams: opening them, giving them their local ends, and what the I/O thread
does with the stream messages the agent sends (a base of AgentClient, which owns the state
declared here)."""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from mirrord_trace.agent_client.errors import RemoteError
from mirrord_trace.agent_client.handed_over import HandedOver
from mirrord_trace.agent_client.local_stream import (
    AgentStream,
    LocalStream,
    reset_on_close,
)
from mirrord_trace.agent_client.pump import StreamPump
from mirrord_trace.agent_client.relay_end import RelayEnd
from mirrord_trace.protocol import (
    HANDOVER,
    Message,
    ProtocolError,
    StreamClose,
    StreamCredit,
    StreamData,
    StreamOpen,
    StreamReset,
)


class ClientStreams:
    """The stream table of an AgentClient: the client's own streams (odd ids), the agent's
    (even ids, incoming connections), and connections handed over whole."""

    # Owned and set up by AgentClient.__init__ (see there).
    receive_buffer: memoryview
    on_stream_open: Callable[[AgentStream], None] | None
    on_incoming_stream: Callable[[int, dict[str, Any]], None] | None
    _stream_ids: Any  # itertools.count: the odd ids of the streams this side opens
    _state_lock: threading.Lock
    _opening: dict[int, StreamPump]
    _streams: dict[int, StreamPump | HandedOver]
    _received_fds: Any  # deque[int]: descriptors that came with frames, in order
    _selector: selectors.BaseSelector
    _start_request: Callable[[str, dict[str, Any], StreamPump | None], Future[dict[str, Any]]]
    _call_in_io_thread: Callable[[Callable[[], None]], None]
    send_quietly: Callable[[Message], None]

    def open_stream(
        self, kind: str = "net.connect", timeout: float | None = None, **fields: Any
    ) -> AgentStream:
        """Ask the agent for a stream (net.connect by default) and return the local end.

        Raises RemoteError with the agent's errno (ECONNREFUSED, ETIMEDOUT...) on failure.
        """
        stream_id = next(self._stream_ids)
        datagram = fields.get("transport") == "udp"
        ours, theirs = socket.socketpair(
            socket.AF_UNIX, socket.SOCK_SEQPACKET if datagram else socket.SOCK_STREAM
        )
        ours.setblocking(False)
        pump = StreamPump(self, stream_id, ours, datagram)
        try:
            future = self._start_request(kind, {**fields, "stream": stream_id}, pump)
            info = future.result(timeout)
        except BaseException as error:
            with self._state_lock:
                self._opening = {k: v for k, v in self._opening.items() if v is not pump}
            ours.close()
            theirs.close()
            if isinstance(error, FutureTimeout):
                message = f"no answer to {kind} within {timeout} s"
                raise RemoteError(errno.ETIMEDOUT, message) from None
            raise
        return AgentStream(stream_id, theirs, info)

    def start_stream(
        self, kind: str = "net.connect", **fields: Any
    ) -> tuple[int, Future[dict[str, Any]]]:
        """Ask the agent for a stream without waiting and without a local end yet.

        Returns the stream id and the future of the reply (RemoteError with the agent's errno
        on failure). After success, call attach_stream with the local socket to pump, or
        drop_stream; whatever the agent sends meanwhile is held, within the stream window.
        """
        stream_id = next(self._stream_ids)
        pump = StreamPump(self, stream_id, None, fields.get("transport") == "udp")
        future = self._start_request(kind, {**fields, "stream": stream_id}, pump)
        return stream_id, future

    def attach_stream(
        self,
        stream_id: int,
        sock: socket.socket,
        on_finished: Callable[[], None] | None = None,
    ) -> threading.Event:
        """Pump a started stream through `sock` (any connected socket; the client owns it now).

        `on_finished` runs on the I/O thread when the stream has ended both ways or was reset.
        Returns an event set once the local side has sent everything (end of file) or the
        stream ended. Thread-safe.
        """
        done = threading.Event()

        def attach() -> None:
            pump = self._streams.get(stream_id)
            if pump is None:  # already ended (reset by the agent, or the session is gone)
                reset_on_close(sock)
                sock.close()
                done.set()
                if on_finished is not None:
                    on_finished()
                return
            pump.local_done = done
            pump.attach(sock, on_finished)
            self._watch(pump)

        self._call_in_io_thread(attach)
        return done

    def drop_stream(self, stream_id: int, code: int = errno.ECONNABORTED) -> None:
        """Abandon a started stream that will get no local end. Thread-safe."""

        def drop() -> None:
            pump = self._streams.get(stream_id)
            if pump is not None:
                pump.reset(code, "the local side abandoned the stream")

        self._call_in_io_thread(drop)

    def handed_over_descriptor(self, stream_id: int) -> int | None:
        """The fd of a connection handed over whole and not attached yet, else None."""
        stream = self._streams.get(stream_id)
        if type(stream) is HandedOver and stream.local is None and not stream.finished:
            return stream.remote.sock.fileno()
        return None

    def release_handed_over(self, stream_id: int) -> None:
        """The program holds the handed-over connection itself now: close this copy with no
        reset (the program's copy keeps it open) and forget the stream. Thread-safe."""

        def release() -> None:
            stream = self._streams.get(stream_id)
            if type(stream) is HandedOver and stream.local is None:
                stream.finish()  # no local end yet: closes only this copy, with no reset

        self._call_in_io_thread(release)

    def forget_stream(self, stream: LocalStream) -> None:
        self._streams.pop(stream.stream_id, None)
        for sock in stream.sockets():
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)

    def _activate(self, pump: StreamPump) -> None:
        pump.active = True
        self._streams[pump.stream_id] = pump
        self._watch(pump)

    def _watch(self, pump: StreamPump | HandedOver | RelayEnd) -> None:
        if isinstance(pump, HandedOver):
            for end in pump.ends():
                self._watch(end)
            return
        if pump.finished or pump.sock is None:
            return
        # Compared with what is registered first: most events change nothing, and the
        # selector's own bookkeeping costs more than the relaying itself.
        mask = pump.interest()
        if mask == pump.watched:
            return
        if mask and pump.watched:
            self._selector.modify(pump.sock, mask, pump)
        elif mask:
            self._selector.register(pump.sock, mask, pump)
        else:
            self._selector.unregister(pump.sock)
        pump.watched = mask

    def _on_stream_message(
        self, message: StreamData | StreamCredit | StreamClose | StreamReset
    ) -> None:
        pump = self._streams.get(message.stream)
        if pump is None:
            return  # already closed on this side
        if isinstance(pump, HandedOver):
            raise ProtocolError(f"stream {message.stream} was handed over: it takes no messages")
        if isinstance(message, StreamData):
            pump.on_data(message.data)
        elif isinstance(message, StreamCredit):
            pump.on_credit(message.amount)
        elif isinstance(message, StreamClose):
            pump.on_close()
        else:
            pump.abort()
        self._watch(pump)

    def _on_stream_open(self, message: StreamOpen) -> None:
        takes_streams = self.on_stream_open is not None or self.on_incoming_stream is not None
        if message.info.get(HANDOVER) is True:
            self._on_handover(message, takes_streams)
            return
        if not takes_streams or message.stream % 2 or message.stream in self._streams:
            self.send_quietly(
                StreamReset(message.stream, errno.ECONNREFUSED, "this client takes no streams")
            )
            return
        datagram = message.info.get("transport") == "udp"
        if self.on_incoming_stream is not None:
            self._activate(StreamPump(self, message.stream, None, datagram))
            self.on_incoming_stream(message.stream, message.info)
            return
        assert self.on_stream_open is not None
        ours, theirs = socket.socketpair(
            socket.AF_UNIX, socket.SOCK_SEQPACKET if datagram else socket.SOCK_STREAM
        )
        ours.setblocking(False)
        self._activate(StreamPump(self, message.stream, ours, datagram))
        self.on_stream_open(AgentStream(message.stream, theirs, message.info))

    def _on_handover(self, message: StreamOpen, takes_streams: bool) -> None:
        """A connection that came whole: its descriptor arrived with this frame's bytes."""
        if not self._received_fds:
            raise ProtocolError(f"stream {message.stream} was handed over without a descriptor")
        connection = socket.socket(fileno=self._received_fds.popleft())
        if not takes_streams or message.stream % 2 or message.stream in self._streams:
            reset_on_close(connection)  # refused, as a stream would be (the agent forgot it)
            connection.close()
        elif self.on_incoming_stream is not None:
            self._streams[message.stream] = HandedOver(self, message.stream, connection)
            self.on_incoming_stream(message.stream, message.info)
        else:
            assert self.on_stream_open is not None
            # The connection is the local end itself: nothing to relay.
            self.on_stream_open(AgentStream(message.stream, connection, message.info))
