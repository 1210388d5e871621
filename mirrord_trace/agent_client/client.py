"""The local side's connection to an agent, with a blocking API for the tracer thread.

One background thread owns the socket's reading side: it decodes replies and resolves the
futures callers wait on, answers pings, and pumps every open stream between the agent and a
local socket pair whose other end goes to the traced program. Callers send their own requests
directly (under a lock), which saves a thread hop on the latency-critical path.

Over a Unix socket (an agent on this machine) the agent may hand a connection over whole (see
HANDOVER in the protocol): the same thread then relays it socket to socket, with no frame and
no agent in its path.
"""

from __future__ import annotations

import array
import contextlib
import errno
import itertools
import os
import select
import selectors
import socket
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

from mirrord_trace.protocol import (
    HANDOVER,
    KEEPALIVE_INTERVAL,
    MAX_DATA_CHUNK,
    PEER_SILENCE_TIMEOUT,
    PROTOCOL_VERSION,
    ErrorReply,
    FlowControlViolation,
    Hello,
    HelloOk,
    HelloRejected,
    Message,
    MessageDecoder,
    Ping,
    Pong,
    ProtocolError,
    ProtocolViolation,
    ReceiveWindow,
    Reply,
    Request,
    SendCredit,
    StreamClose,
    StreamCredit,
    StreamData,
    StreamOpen,
    StreamReset,
    encode,
    validate_request,
)
from mirrord_trace.protocol.requests import InvalidRequest
from mirrord_trace.signal_mask import helper_threads_spared

# The I/O thread receives into one buffer of this size (AgentClient.receive_buffer), never
# with recv(n): for n >= 128 KiB, CPython's recv mallocs n bytes, which glibc serves with
# mmap + mremap + munmap -- ~17 us per call whatever arrived, more than relaying a small
# request costs.
_RECEIVE_SIZE = 256 * 1024
# A receive returns at most one sendmsg's descriptors (the kernel stops there) and the agent
# sends one per frame; room for more only so that a surplus is noticed, not silently closed.
_MAX_FDS_PER_RECEIVE = 8
# SO_LINGER on with a zero timeout: close() sends a TCP reset instead of a FIN.
_LINGER_RESET = struct.pack("ii", 1, 0)
_FD_SIZE = array.array("i").itemsize


class RemoteError(Exception):
    """A request failed; `errno` is what the traced program should see."""

    def __init__(self, errno_code: int, message: str) -> None:
        super().__init__(errno_code, message)
        self.errno = errno_code
        self.message = message

    def __str__(self) -> str:
        return f"{self.message} ({errno.errorcode.get(self.errno, self.errno)})"


class AgentLost(RemoteError):
    """The connection to the agent is gone; every later request fails the same way."""


class AgentConnectError(Exception):
    """No session could be opened (agent unreachable, handshake refused...)."""


class HandshakeRejected(AgentConnectError):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"the agent refused the session ({reason}): {message}")
        self.reason = reason


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


def _resolve(
    future: Future[dict[str, Any]],
    result: dict[str, Any] | None = None,
    error: BaseException | None = None,
) -> None:
    """Complete `future` unless its caller already gave up on it (timed out, cancelled)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result or {})
    except InvalidStateError:
        pass


def _read_hello_answer(sock: socket.socket, decoder: MessageDecoder, deadline: float) -> Message:
    while True:
        try:
            return next(decoder)
        except StopIteration:
            pass
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        data = sock.recv(_RECEIVE_SIZE)
        if not data:
            raise AgentConnectError("the agent closed the connection during the handshake")
        decoder.feed(data)


def _reset_on_close(sock: socket.socket) -> None:
    """Make close() send a TCP reset (for TCP sockets; other kinds just close)."""
    if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)


class _LocalStream:
    """What a stream (relayed in frames, or handed over whole) and its local sockets have in
    common at the end: finished once, with `local_done` set, forgotten by the client, its
    sockets closed (after a reset, with SO_LINGER 0), then `on_finished`."""

    client: AgentClient
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
            _reset_on_close(sock)
        self.finish()

    def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        self.local_done.set()
        self.client._forget_stream(self)
        for sock in self.sockets():
            sock.close()
        if self.on_finished is not None:
            self.on_finished()


class _StreamPump(_LocalStream):
    """Moves one stream's bytes between the agent and the local socket; reader thread only.

    `sock` is None while a stream started with start_stream waits for its local end: what the
    agent sends meanwhile waits in the outbox (at most one window, by flow control).
    """

    def __init__(
        self, client: AgentClient, stream_id: int, sock: socket.socket | None, datagram: bool
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
            self.client._send_quietly(StreamClose(self.stream_id))
            self._finish_if_done()
            return
        self.credit.take(len(data))
        self.client._send_quietly(StreamData(self.stream_id, data))

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
                self.client._send_quietly(StreamCredit(self.stream_id, grant))
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
            self.client._send_quietly(StreamReset(self.stream_id, code, message))
            self.finish()

    def sockets(self) -> tuple[socket.socket, ...]:
        return () if self.sock is None else (self.sock,)

    def attach(self, sock: socket.socket, on_finished: Callable[[], None] | None) -> None:
        """Give a stream started with start_stream its local end (I/O thread)."""
        self.on_finished = on_finished
        if self.finished:  # the agent ended the stream before the local end existed
            _reset_on_close(sock)
            sock.close()
            if on_finished is not None:
                on_finished()
            return
        sock.setblocking(False)
        self.sock = sock
        self.flush()
        if self.received_close and not self.outbox:
            self._shutdown_write()
            self._finish_if_done()


class _HandedOver(_LocalStream):
    """A connection the agent handed over whole, relayed socket to socket to its local end
    (I/O thread only). Same life as a stream for the caller (attach_stream, drop_stream,
    on_finished, local_done); FIN and reset travel as they do through a stream: an end's
    FIN shuts the other end's sending side once everything before it went out, an error on
    either end resets both."""

    def __init__(self, client: AgentClient, stream_id: int, remote: socket.socket) -> None:
        self.client = client
        self.stream_id = stream_id
        self.local_done = threading.Event()
        self.on_finished: Callable[[], None] | None = None
        self.finished = False
        remote.setblocking(False)
        self.remote = _RelayEnd(self, remote)
        self.local: _RelayEnd | None = None

    def ends(self) -> tuple[_RelayEnd, ...]:
        return (self.remote,) if self.local is None else (self.remote, self.local)

    def attach(self, sock: socket.socket, on_finished: Callable[[], None] | None) -> None:
        self.on_finished = on_finished
        if self.finished:
            _reset_on_close(sock)
            sock.close()
            if on_finished is not None:
                on_finished()
            return
        sock.setblocking(False)
        self.local = _RelayEnd(self, sock)
        self.local.peer, self.remote.peer = self.remote, self.local

    def fin_passed(self, end: _RelayEnd) -> None:
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


class _RelayEnd:
    """One socket of a handed-over connection: what it reads goes to `peer`'s socket. Reading
    pauses while the peer cannot take more (its kernel buffer is full), so each direction
    holds at most one receive's worth here and the slow side pushes back on the other."""

    def __init__(self, relay: _HandedOver, sock: socket.socket) -> None:
        self.relay = relay
        self.sock = sock
        self.peer: _RelayEnd | None = None
        self.pending = b""  # read from the peer, not yet taken by this socket
        self.read_done = False  # this socket's peer sent FIN (recv returned b"")
        self.shut = False  # FIN passed on: this socket's sending side is shut
        self.watched = 0  # as _StreamPump.watched

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
        buffer = self.relay.client.receive_buffer
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


class AgentClient:
    """A session with an agent. Thread-safe; create it with AgentClient.connect()."""

    def __init__(
        self,
        sock: socket.socket,
        decoder: MessageDecoder,
        session_info: dict[str, Any],
        *,
        keepalive_interval: float = KEEPALIVE_INTERVAL,
        silence_timeout: float = PEER_SILENCE_TIMEOUT,
    ) -> None:
        self.session_info = session_info
        self.keepalive_interval = keepalive_interval
        self.silence_timeout = silence_timeout
        # Called once when the connection is lost (not on close()), from the thread that
        # noticed: usually the I/O thread, or a caller whose send failed.
        self.on_lost: Callable[[AgentLost], None] | None = None
        # Called from the I/O thread for each stream the agent opens (incoming connections).
        self.on_stream_open: Callable[[AgentStream], None] | None = None
        # Instead of on_stream_open: called from the I/O thread with (stream id, info) for each
        # stream the agent opens; the stream starts without a local end (what the agent sends
        # is held, within the window) and the callee gives it one with attach_stream, or
        # drop_stream. Saves the socket pair's extra hop when the end is a real connection.
        self.on_incoming_stream: Callable[[int, dict[str, Any]], None] | None = None
        self._sock = sock
        self._decoder = decoder
        self._send_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._request_ids = itertools.count(1)
        self._stream_ids = itertools.count(1, 2)  # odd: streams this side opens
        self._pending: dict[int, Future[dict[str, Any]]] = {}
        self._opening: dict[int, _StreamPump] = {}
        # Work other threads hand to the I/O thread (it owns the pumps and the selector).
        self._io_calls: deque[Callable[[], None]] = deque()
        self._streams: dict[int, _StreamPump | _HandedOver] = {}
        # A Unix socket: the agent is on this machine and can pass descriptors (HANDOVER).
        self._takes_descriptors = sock.family == socket.AF_UNIX
        # Received with the frames they came with, taken by those frames' StreamOpen in order.
        self._received_fds: deque[int] = deque()
        self._lost: AgentLost | None = None
        self._closing = False
        self._last_heard = time.monotonic()
        self._last_sent = self._last_heard
        self._selector = selectors.DefaultSelector()
        # I/O thread only: what it receives is decoded or passed on before the next receive.
        self.receive_buffer = memoryview(bytearray(_RECEIVE_SIZE))
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # Non-blocking: a socket with a timeout makes CPython poll() before every send and
        # receive. Sends wait for room themselves (_write_all), at most silence_timeout at a
        # time: a peer that accepts nothing for so long is gone.
        sock.setblocking(False)
        # Messages the I/O thread sends during one loop round, sent together at its end.
        self._queued: list[bytes] = []
        self._selector.register(sock, selectors.EVENT_READ, None)
        self._selector.register(self._wake_read, selectors.EVENT_READ, None)
        self._thread = threading.Thread(
            target=self._run, name="mirrord-trace-agent-io", daemon=True
        )
        self._io_thread_id: int | None = None  # set by the thread itself
        with helper_threads_spared():
            self._thread.start()

    @classmethod
    def connect(
        cls,
        host: str,
        port: int,
        token: str,
        *,
        timeout: float = 5.0,
        keepalive_interval: float = KEEPALIVE_INTERVAL,
        silence_timeout: float = PEER_SILENCE_TIMEOUT,
    ) -> AgentClient:
        """Open a session; raises AgentConnectError (HandshakeRejected) with a clear message.

        When nothing at all arrives from the agent for `silence_timeout` seconds (it pings
        after `keepalive_interval` idle seconds), the agent counts as lost.
        """
        where = f"{host}:{port}"
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as error:
            reason = error.strerror or str(error) or type(error).__name__
            raise AgentConnectError(f"cannot reach the agent at {where}: {reason}") from None
        return cls.over_socket(
            sock,
            token,
            where=where,
            timeout=timeout,
            keepalive_interval=keepalive_interval,
            silence_timeout=silence_timeout,
        )

    @classmethod
    def over_socket(
        cls,
        sock: socket.socket,
        token: str,
        *,
        where: str,
        timeout: float = 5.0,
        keepalive_interval: float = KEEPALIVE_INTERVAL,
        silence_timeout: float = PEER_SILENCE_TIMEOUT,
    ) -> AgentClient:
        """Open a session over a connected stream socket (e.g. one end of a Kubernetes
        port-forward); the client owns `sock` from now on, and closes it on failure."""
        try:
            sock.settimeout(timeout)
            sock.sendall(encode(Hello(PROTOCOL_VERSION, token)))
            decoder = MessageDecoder()
            answer = _read_hello_answer(sock, decoder, time.monotonic() + timeout)
        except AgentConnectError:
            sock.close()
            raise
        except (OSError, ProtocolError) as error:
            sock.close()
            raise AgentConnectError(
                f"handshake with the agent at {where} failed: {error}"
            ) from None
        if isinstance(answer, HelloRejected):
            sock.close()
            raise HandshakeRejected(answer.reason, answer.message)
        if not isinstance(answer, HelloOk):
            sock.close()
            detail = answer.message if isinstance(answer, ProtocolViolation) else answer
            raise AgentConnectError(f"the agent at {where} answered the handshake with {detail}")
        return cls(
            sock,
            decoder,
            answer.session,
            keepalive_interval=keepalive_interval,
            silence_timeout=silence_timeout,
        )

    # -- requests --
    def request(self, kind: str, timeout: float | None = None, **fields: Any) -> dict[str, Any]:
        """Send one request and wait for its reply fields.

        Raises RemoteError(errno, message) when the agent reports an error (ETIMEDOUT when no
        reply came within `timeout`), AgentLost when the connection is gone.
        """
        future = self.request_async(kind, **fields)
        try:
            return future.result(timeout)
        except FutureTimeout:
            future.cancel()
            raise RemoteError(
                errno.ETIMEDOUT, f"the agent did not answer {kind} within {timeout} s"
            ) from None

    def request_async(self, kind: str, **fields: Any) -> Future[dict[str, Any]]:
        """Send one request; the future resolves to the reply fields or a RemoteError."""
        return self._start_request(kind, fields, None)

    def _start_request(
        self, kind: str, fields: dict[str, Any], opening: _StreamPump | None
    ) -> Future[dict[str, Any]]:
        try:
            validate_request(kind, fields)
        except InvalidRequest as error:
            raise ValueError(f"invalid {kind} request: {error.message}") from None
        request_id = next(self._request_ids)
        future: Future[dict[str, Any]] = Future()
        with self._state_lock:
            if self._lost is not None:
                raise self._lost
            self._pending[request_id] = future
            if opening is not None:
                self._opening[request_id] = opening
        future.add_done_callback(lambda _: self._pending.pop(request_id, None))
        self._send(Request(request_id, kind, fields))
        return future

    # -- streams --
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
        pump = _StreamPump(self, stream_id, ours, datagram)
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
        pump = _StreamPump(self, stream_id, None, fields.get("transport") == "udp")
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
                _reset_on_close(sock)
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

    def _call_in_io_thread(self, call: Callable[[], None]) -> None:
        self._io_calls.append(call)
        with contextlib.suppress(OSError):  # closed: the I/O thread has ended every stream
            os.write(self._wake_write, b"x")

    # -- lifetime --
    @property
    def lost(self) -> bool:
        return self._lost is not None

    @property
    def passes_descriptors(self) -> bool:
        """Whether the session can carry descriptors: the agent is on this machine, at the
        other end of a Unix socket (see HANDOVER)."""
        return self._takes_descriptors

    def close(self) -> None:
        """End the session; streams are closed and pending requests fail with AgentLost."""
        if self._closing:
            return
        self._closing = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        os.write(self._wake_write, b"x")
        if threading.current_thread() is not self._thread:
            self._thread.join()
            # Only now: the I/O thread may write to the pipe until it has stopped.
            os.close(self._wake_read)
            os.close(self._wake_write)

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- sending --
    def _send(self, message: Message) -> None:
        """Send at once (callers' requests: the latency-critical path)."""
        self._send_bytes(encode(message))

    def _send_bytes(self, data: bytes) -> None:
        try:
            with self._send_lock:
                self._write_all(data)
        except OSError as error:
            lost = self._mark_lost(
                error.errno or errno.EIO, f"sending to the agent failed: {error}"
            )
            raise lost from None
        self._last_sent = time.monotonic()

    def _write_all(self, data: bytes) -> None:
        """sendall on the non-blocking socket; TimeoutError once no byte could go out for
        silence_timeout seconds."""
        view = memoryview(data)
        while view:
            try:
                view = view[self._sock.send(view) :]
            except BlockingIOError:
                fd = self._sock.fileno()
                if fd < 0:  # closed meanwhile by the I/O thread (the session ended)
                    raise OSError(errno.EBADF, "the connection to the agent is closed") from None
                poller = select.poll()
                poller.register(fd, select.POLLOUT)
                if not poller.poll(self.silence_timeout * 1000):
                    raise TimeoutError(
                        errno.ETIMEDOUT, f"the agent took nothing for {self.silence_timeout:g} s"
                    ) from None

    def _send_quietly(self, message: Message) -> None:
        """Send from the I/O thread; a failure is reported through the lost path. The
        messages of one loop round leave in one send at its end (_send_queued): fewer system
        calls, and the agent wakes once for them."""
        if threading.get_ident() != self._io_thread_id:
            with contextlib.suppress(AgentLost):
                self._send(message)
            return
        self._queued.append(encode(message))

    def _send_queued(self) -> None:
        if self._queued:
            frames, self._queued = self._queued, []
            with contextlib.suppress(AgentLost):
                self._send_bytes(frames[0] if len(frames) == 1 else b"".join(frames))

    def _mark_lost(self, code: int, message: str) -> AgentLost:
        with self._state_lock:
            if self._lost is not None:
                return self._lost
            if code not in (errno.ECONNRESET, errno.EIO, errno.ETIMEDOUT):
                code = errno.EIO
            self._lost = AgentLost(code, message)
            pending = list(self._pending.values())
            self._pending.clear()
            self._opening.clear()
        for future in pending:
            _resolve(future, error=self._lost)
        if not self._closing and self.on_lost is not None:
            try:
                self.on_lost(self._lost)
            except Exception as error:  # the hook's bug must not hide the loss itself
                print(f"mirrord-trace: on_lost hook failed: {error!r}", file=sys.stderr)
        os.write(self._wake_write, b"x")
        return self._lost

    def handed_over_descriptor(self, stream_id: int) -> int | None:
        """The fd of a connection handed over whole and not attached yet, else None."""
        stream = self._streams.get(stream_id)
        if type(stream) is _HandedOver and stream.local is None and not stream.finished:
            return stream.remote.sock.fileno()
        return None

    def release_handed_over(self, stream_id: int) -> None:
        """The program holds the handed-over connection itself now: close this copy with no
        reset (the program's copy keeps it open) and forget the stream. Thread-safe."""

        def release() -> None:
            stream = self._streams.get(stream_id)
            if type(stream) is _HandedOver and stream.local is None:
                stream.finish()  # no local end yet: closes only this copy, with no reset

        self._call_in_io_thread(release)

    def _forget_stream(self, stream: _LocalStream) -> None:
        self._streams.pop(stream.stream_id, None)
        for sock in stream.sockets():
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)

    # -- the I/O thread --
    def _run(self) -> None:
        self._io_thread_id = threading.get_ident()
        try:
            self._loop()
        except Exception as error:  # a bug here must still fail every waiter, not hang them
            self._mark_lost(errno.EIO, f"agent client I/O thread failed: {error!r}")
        finally:
            if self._lost is None:
                self._mark_lost(errno.ECONNRESET, "the agent client was closed")
            for pump in list(self._streams.values()):
                pump.abort()
            while self._received_fds:  # came with frames that were never decoded
                os.close(self._received_fds.popleft())
            self._selector.close()
            self._sock.close()

    def _loop(self) -> None:
        # Everything the agent sent along with its HelloOk is already in the decoder.
        if self._decoder.buffered:
            self._handle_incoming(b"")
        while self._lost is None and not self._closing:
            self._send_queued()
            for key, mask in self._selector.select(timeout=self.keepalive_interval / 2):
                if key.fileobj is self._sock:
                    self._receive()
                elif key.fileobj == self._wake_read:
                    os.read(self._wake_read, 4096)
                    while self._io_calls:
                        self._io_calls.popleft()()
                else:
                    pump: _StreamPump | _RelayEnd = key.data
                    if mask & selectors.EVENT_WRITE and not pump.finished:
                        pump.flush()
                    if mask & selectors.EVENT_READ and not pump.finished:
                        pump.on_readable()
                    self._watch(pump.relay if isinstance(pump, _RelayEnd) else pump)
                if self._lost is not None or self._closing:
                    return
            self._keepalive()

    def _keepalive(self) -> None:
        now = time.monotonic()
        if now - self._last_heard >= self.silence_timeout:
            silent = now - self._last_heard
            self._mark_lost(errno.ETIMEDOUT, f"no word from the agent for {silent:.0f} s")
        elif now - max(self._last_heard, self._last_sent) >= self.keepalive_interval:
            self._send_quietly(Ping(int(now * 1000)))

    def _receive(self) -> None:
        try:
            if self._takes_descriptors:
                size = self._receive_with_descriptors()
            else:
                size = self._sock.recv_into(self.receive_buffer)
        except (BlockingIOError, TimeoutError):
            return
        except OSError as error:
            self._mark_lost(
                error.errno or errno.ECONNRESET, f"the connection to the agent broke: {error}"
            )
            return
        if not size:
            self._mark_lost(errno.ECONNRESET, "the agent closed the connection")
            return
        self._last_heard = time.monotonic()
        self._handle_incoming(self.receive_buffer[:size])

    def _receive_with_descriptors(self) -> int:
        space = socket.CMSG_SPACE(_MAX_FDS_PER_RECEIVE * _FD_SIZE)
        size, ancillary, flags, _ = self._sock.recvmsg_into(
            [self.receive_buffer], space, socket.MSG_CMSG_CLOEXEC
        )
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(payload[: len(payload) - len(payload) % _FD_SIZE])
                self._received_fds.extend(fds)
        if flags & socket.MSG_CTRUNC:
            self._mark_lost(errno.EIO, "the agent sent more descriptors than one frame takes")
        return int(size)

    def _handle_incoming(self, data: bytes | memoryview) -> None:
        try:
            self._decoder.feed(data)
            for message in self._decoder:
                self._dispatch(message)
        except ProtocolError as error:
            # Our own agent does not send garbage; if it does, nothing it says can be trusted.
            self._mark_lost(errno.EIO, f"the agent sent an invalid message: {error}")

    def _dispatch(self, message: Message) -> None:
        if isinstance(message, Reply | ErrorReply):
            pump = self._opening.pop(message.id, None)
            future = self._pending.pop(message.id, None)
            if isinstance(message, Reply):
                if pump is not None:
                    self._activate(pump)
                if future is not None:
                    _resolve(future, result=message.fields)
            elif future is not None:
                _resolve(future, error=RemoteError(message.errno, message.message))
        elif isinstance(message, StreamData | StreamCredit | StreamClose | StreamReset):
            self._on_stream_message(message)
        elif isinstance(message, StreamOpen):
            self._on_stream_open(message)
        elif isinstance(message, Ping):
            self._send_quietly(Pong(message.nonce))
        elif isinstance(message, Pong):
            pass
        elif isinstance(message, ProtocolViolation):
            print(
                f"mirrord-trace: the agent refused a message from this side: {message.message}",
                file=sys.stderr,
            )
        else:
            raise ProtocolError(f"an agent does not send {type(message).__name__}")

    def _activate(self, pump: _StreamPump) -> None:
        pump.active = True
        self._streams[pump.stream_id] = pump
        self._watch(pump)

    def _watch(self, pump: _StreamPump | _HandedOver | _RelayEnd) -> None:
        if isinstance(pump, _HandedOver):
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
        if isinstance(pump, _HandedOver):
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
            self._send_quietly(
                StreamReset(message.stream, errno.ECONNREFUSED, "this client takes no streams")
            )
            return
        datagram = message.info.get("transport") == "udp"
        if self.on_incoming_stream is not None:
            self._activate(_StreamPump(self, message.stream, None, datagram))
            self.on_incoming_stream(message.stream, message.info)
            return
        assert self.on_stream_open is not None
        ours, theirs = socket.socketpair(
            socket.AF_UNIX, socket.SOCK_SEQPACKET if datagram else socket.SOCK_STREAM
        )
        ours.setblocking(False)
        self._activate(_StreamPump(self, message.stream, ours, datagram))
        self.on_stream_open(AgentStream(message.stream, theirs, message.info))

    def _on_handover(self, message: StreamOpen, takes_streams: bool) -> None:
        """A connection that came whole: its descriptor arrived with this frame's bytes."""
        if not self._received_fds:
            raise ProtocolError(f"stream {message.stream} was handed over without a descriptor")
        connection = socket.socket(fileno=self._received_fds.popleft())
        if not takes_streams or message.stream % 2 or message.stream in self._streams:
            _reset_on_close(connection)  # refused, as a stream would be (the agent forgot it)
            connection.close()
        elif self.on_incoming_stream is not None:
            self._streams[message.stream] = _HandedOver(self, message.stream, connection)
            self.on_incoming_stream(message.stream, message.info)
        else:
            assert self.on_stream_open is not None
            # The connection is the local end itself: nothing to relay.
            self.on_stream_open(AgentStream(message.stream, connection, message.info))
