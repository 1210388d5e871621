"""AgentClient: a session with an agent, with a blocking API for the tracer thread.

One background thread owns the socket's reading side: it decodes replies and resolves the
futures callers wait on, answers pings, and runs every open stream (streams, pump,
handed_over). Callers send their own requests directly (under a lock), which saves a thread
hop on the latency-critical path.
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
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from mirrord_trace.agent_client.errors import AgentLost, RemoteError
from mirrord_trace.agent_client.handed_over import HandedOver
from mirrord_trace.agent_client.handshake import (
    RECEIVE_SIZE,
    connect_socket,
    connect_unix_socket,
    hello,
)
from mirrord_trace.agent_client.local_stream import AgentStream
from mirrord_trace.agent_client.pump import StreamPump
from mirrord_trace.agent_client.relay_end import RelayEnd
from mirrord_trace.agent_client.streams import ClientStreams
from mirrord_trace.protocol import (
    AGENT_SILENCE_TIMEOUT,
    CLIENT_KEEPALIVE_INTERVAL,
    ErrorReply,
    Message,
    MessageDecoder,
    Ping,
    Pong,
    ProtocolError,
    ProtocolViolation,
    Reply,
    Request,
    StreamClose,
    StreamCredit,
    StreamData,
    StreamOpen,
    StreamReset,
    encode,
    encode_vectored,
    validate_request,
)
from mirrord_trace.protocol.keepalive import stopped_for
from mirrord_trace.protocol.requests import InvalidRequest
from mirrord_trace.signal_mask import helper_threads_spared

# A receive returns at most one sendmsg's descriptors (the kernel stops there) and the agent
# sends one per frame; room for more only so that a surplus is noticed, not silently closed.
_MAX_FDS_PER_RECEIVE = 8
_FD_SIZE = array.array("i").itemsize
# The I/O thread's queued frames leave as soon as they add up to this much, not only at the end
# of its loop round: a round that finds 500 relay ends readable would otherwise hold 500 data
# frames (up to 256 KiB each) and then their concatenation, hundreds of MiB, before sending
# any of it (tests/test_outgoing_load.py measured the supervisor at ~250 MB).
_QUEUE_LIMIT = 64 * 1024
_MAX_IOVECS = 512  # well under IOV_MAX (1024)


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


class AgentClient(ClientStreams):
    """A session with an agent. Thread-safe; create it with AgentClient.connect()."""

    def __init__(
        self,
        sock: socket.socket,
        decoder: MessageDecoder,
        session_info: dict[str, Any],
        *,
        keepalive_interval: float = CLIENT_KEEPALIVE_INTERVAL,
        silence_timeout: float = AGENT_SILENCE_TIMEOUT,
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
        self._opening: dict[int, StreamPump] = {}
        # Work other threads hand to the I/O thread (it owns the pumps and the selector).
        self._io_calls: deque[Callable[[], None]] = deque()
        self._streams: dict[int, StreamPump | HandedOver] = {}
        # A Unix socket: the agent is on this machine and can pass descriptors (HANDOVER).
        self._takes_descriptors = sock.family == socket.AF_UNIX
        # Received with the frames they came with, taken by those frames' StreamOpen in order.
        self._received_fds: deque[int] = deque()
        self._lost: AgentLost | None = None
        self._closing = False
        self._last_heard = time.monotonic()
        self._last_sent = self._last_heard
        self._last_tick = self._last_heard  # the I/O loop's last round (see _keepalive)
        self._selector = selectors.DefaultSelector()
        # I/O thread only: what it receives is decoded or passed on before the next receive.
        self.receive_buffer = memoryview(bytearray(RECEIVE_SIZE))
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # Non-blocking: a socket with a timeout makes CPython poll() before every send and
        # receive. Sends wait for room themselves (_write_all), at most silence_timeout at a
        # time: a peer that accepts nothing for so long is gone.
        sock.setblocking(False)
        # Messages the I/O thread sends during one loop round, sent together at its end.
        self._queued: list[bytes] = []
        self._queued_size = 0
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
        keepalive_interval: float = CLIENT_KEEPALIVE_INTERVAL,
        silence_timeout: float = AGENT_SILENCE_TIMEOUT,
    ) -> AgentClient:
        """Open a session; raises AgentConnectError (HandshakeRejected) with a clear message.

        When nothing at all arrives from the agent for `silence_timeout` seconds (it pings
        after `keepalive_interval` idle seconds), the agent counts as lost.
        """
        where = f"{host}:{port}"
        return cls.over_socket(
            connect_socket(host, port, timeout),
            token,
            where=where,
            timeout=timeout,
            keepalive_interval=keepalive_interval,
            silence_timeout=silence_timeout,
        )

    @classmethod
    def connect_unix(
        cls,
        path: str,
        token: str,
        *,
        timeout: float = 5.0,
        keepalive_interval: float = CLIENT_KEEPALIVE_INTERVAL,
        silence_timeout: float = AGENT_SILENCE_TIMEOUT,
    ) -> AgentClient:
        """Open a session with an agent on this machine through its Unix socket."""
        return cls.over_socket(
            connect_unix_socket(path, timeout),
            token,
            where=path,
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
        keepalive_interval: float = CLIENT_KEEPALIVE_INTERVAL,
        silence_timeout: float = AGENT_SILENCE_TIMEOUT,
    ) -> AgentClient:
        """Open a session over a connected stream socket (e.g. one end of a Kubernetes
        port-forward); the client owns `sock` from now on, and closes it on failure."""
        decoder, session = hello(sock, token, where, timeout)
        return cls(
            sock,
            decoder,
            session,
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
        self, kind: str, fields: dict[str, Any], opening: StreamPump | None
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

    def _send_bytes(self, data: bytes | list[bytes]) -> None:
        try:
            with self._send_lock:
                if isinstance(data, list):
                    self._write_all_vectored(data)
                else:
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
                self._wait_writable()

    def _wait_writable(self) -> None:
        fd = self._sock.fileno()
        if fd < 0:  # closed meanwhile by the I/O thread (the session ended)
            raise OSError(errno.EBADF, "the connection to the agent is closed") from None
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        if not poller.poll(self.silence_timeout * 1000):
            raise TimeoutError(
                errno.ETIMEDOUT, f"the agent took nothing for {self.silence_timeout:g} s"
            ) from None

    def _write_all_vectored(self, buffers: list[bytes]) -> None:
        """_write_all of the buffers one after the other, in as few sendmsg calls as the
        socket allows (no joining: a data frame's payload is not copied again)."""
        views = [memoryview(buffer) for buffer in buffers]
        while views:
            try:
                sent = self._sock.sendmsg(views[:_MAX_IOVECS])
            except BlockingIOError:
                self._wait_writable()
                continue
            while views and sent >= len(views[0]):
                sent -= len(views.pop(0))
            if sent:
                views[0] = views[0][sent:]

    def send_quietly(self, message: Message) -> None:
        """Send from the I/O thread; a failure is reported through the lost path. The
        messages of one loop round leave in one send at its end (_send_queued): fewer system
        calls, and the agent wakes once for them."""
        if threading.get_ident() != self._io_thread_id:
            with contextlib.suppress(AgentLost):
                self._send(message)
            return
        for part in encode_vectored(message):
            self._queued.append(part)
            self._queued_size += len(part)
        if self._queued_size >= _QUEUE_LIMIT:
            self._send_queued()

    def _send_queued(self) -> None:
        if self._queued:
            frames, self._queued, self._queued_size = self._queued, [], 0
            with contextlib.suppress(AgentLost):
                self._send_bytes(frames[0] if len(frames) == 1 else frames)

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
                    pump: StreamPump | RelayEnd = key.data
                    if mask & selectors.EVENT_WRITE and not pump.finished:
                        pump.flush()
                    if mask & selectors.EVENT_READ and not pump.finished:
                        pump.on_readable()
                    self._watch(pump.relay if isinstance(pump, RelayEnd) else pump)
                if self._lost is not None or self._closing:
                    return
            self._keepalive()

    def _keepalive(self) -> None:
        now = time.monotonic()
        stopped = stopped_for(self._last_tick, now, self.keepalive_interval / 2)
        self._last_tick = now
        if stopped:
            # This process was stopped (Ctrl-Z, SIGSTOP) or the machine slept: the agent was
            # not heard because nobody listened. It gets a full timeout from now, and a ping
            # at once tells it this side is back (it gave stolen ports back meanwhile).
            self._last_heard = now
            self._last_sent = now - self.keepalive_interval
        if now - self._last_heard >= self.silence_timeout:
            silent = now - self._last_heard
            self._mark_lost(errno.ETIMEDOUT, f"no word from the agent for {silent:.0f} s")
        elif now - max(self._last_heard, self._last_sent) >= self.keepalive_interval:
            self.send_quietly(Ping(int(now * 1000)))

    def _receive(self) -> None:
        # Straight into the decoder: a large frame's body lands where it is decoded from.
        buffer = self._decoder.get_buffer(RECEIVE_SIZE)
        try:
            if self._takes_descriptors:
                size = self._receive_with_descriptors(buffer)
            else:
                size = self._sock.recv_into(buffer)
        except (BlockingIOError, TimeoutError):
            self._decoder.buffer_updated(0)
            return
        except OSError as error:
            self._decoder.buffer_updated(0)
            self._mark_lost(
                error.errno or errno.ECONNRESET, f"the connection to the agent broke: {error}"
            )
            return
        self._decoder.buffer_updated(size)
        if not size:
            self._mark_lost(errno.ECONNRESET, "the agent closed the connection")
            return
        self._last_heard = time.monotonic()
        self._handle_incoming(b"")

    def _receive_with_descriptors(self, buffer: memoryview) -> int:
        space = socket.CMSG_SPACE(_MAX_FDS_PER_RECEIVE * _FD_SIZE)
        size, ancillary, flags, _ = self._sock.recvmsg_into(
            [buffer], space, socket.MSG_CMSG_CLOEXEC
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
            self.send_quietly(Pong(message.nonce))
        elif isinstance(message, Pong):
            pass
        elif isinstance(message, ProtocolViolation):
            print(
                f"mirrord-trace: the agent refused a message from this side: {message.message}",
                file=sys.stderr,
            )
        else:
            raise ProtocolError(f"an agent does not send {type(message).__name__}")
