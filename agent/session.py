"""One client connection: handshake, then requests and streams until the client goes away.

A bad frame or a bad request gets an error back and the session carries on; only a broken
byte stream (a frame length above the limit) ends it.
"""

from __future__ import annotations

import array
import asyncio
import collections
import errno
import os
import socket
import struct
from collections import Counter
from collections.abc import Callable
from typing import Any

from agent.context import ServerContext, log
from agent.files.reads import FileHandles
from agent.handlers import HANDLERS, Fields, Handler
from agent.net.streams import Stream
from mirrord_trace.protocol import (
    MAX_DATA_CHUNK,
    PEER_SILENCE_TIMEOUT,
    PROTOCOL_VERSION,
    REQUESTS,
    ErrorReply,
    FramingError,
    Hello,
    HelloOk,
    InvalidRequest,
    MalformedMessage,
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
    StreamReset,
    check_hello,
    encode,
    encode_vectored,
    validate_request,
)
from mirrord_trace.protocol.handshake import HANDSHAKE_TIMEOUT, PREAUTH_LIMIT

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
# File requests of one session running in the thread pool at once, at most: each reply is up
# to MAX_READ_SIZE, so this bounds what a session that does not read can make the agent hold.
MAX_FILE_WORK = 16
# Bytes of requests that wait while a session is congested before the agent stops reading it.
STALLED_LIMIT = 1024 * 1024
# A silent client over the network (its connection may hang without closing) is dropped after
# this long; one on this machine (a Unix socket) only when its connection closes.
SUSPENDED_SESSION_LIMIT = 24 * 3600.0
# Queued frames are sent as soon as they add up to this much (see Session._write).
_BATCH_LIMIT = 64 * 1024


def peer_credentials(sock: socket.socket) -> tuple[int, int] | None:
    """(pid, uid) of the process at the other end of a Unix socket (SO_PEERCRED)."""
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except OSError:
        return None
    pid, uid, _ = _UCRED.unpack(creds)
    return pid, uid


def error_reply(request_id: int, error: BaseException) -> ErrorReply:
    """The typed error the client hands on to the program."""
    if isinstance(error, InvalidRequest):
        return ErrorReply(request_id, error.errno, error.message)
    if isinstance(error, TimeoutError) and not error.errno:
        return ErrorReply(request_id, errno.ETIMEDOUT, str(error) or "timed out")
    if isinstance(error, OSError) and error.errno:
        name = error.filename
        where = f": {os.fsdecode(name)}" if isinstance(name, str | bytes) and name else ""
        return ErrorReply(request_id, error.errno, f"{error.strerror}{where}")
    return ErrorReply(request_id, errno.EIO, f"agent error: {type(error).__name__}: {error}")


class Session(asyncio.BufferedProtocol):
    """`unix_socket`: the session's own socket when it is a Unix socket pair shared with a
    client on this machine; connections can then be handed over whole (send_descriptor)."""

    def __init__(self, server: ServerContext, unix_socket: socket.socket | None = None) -> None:
        self.server = server
        self._unix_socket = unix_socket
        self.target_pid = server.target_pid
        self.root = server.root
        self.handles = FileHandles()
        self.counts: Counter[str] = Counter()
        self.byte_counts: Counter[str] = Counter()
        self.peer = "?"
        self.peer_uid: int | None = None  # of a client on a Unix socket (SO_PEERCRED)
        self._transport: asyncio.Transport | None = None
        # Kept: asyncio.get_running_loop() costs a getpid() system call each time, and the
        # data path needs the loop for every frame.
        self._loop = asyncio.get_running_loop()
        self._decoder = MessageDecoder()
        self._authenticated = False
        self._streams: dict[int, Stream] = {}
        self._reserved_streams: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()  # network work: cancelled on close
        self._thread_tasks: set[asyncio.Task[None]] = set()  # file work: awaited on close
        self._outgoing: list[bytes] = []
        self._outgoing_size = 0
        self._writable = asyncio.Event()
        self._writable.set()
        self._reading_paused = False  # by _process: too many requests wait
        self._stalled: collections.deque[Request] = collections.deque()  # while congested
        self._stalled_size = 0  # their frames' bytes
        self._resume_scheduled = False
        self._last_heard = 0.0
        self._watchdog: asyncio.TimerHandle | None = None
        # Run when the client is gone, before its streams are dropped (e.g. incoming
        # subscriptions give their ports back).
        self.close_callbacks: list[Callable[[], None]] = []
        # Run when the client has been silent for PEER_SILENCE_TIMEOUT with its connection
        # open (stopped, asleep), and when it speaks again (stolen ports go back and forth).
        self.suspended = False
        self.suspend_callbacks: list[Callable[[], None]] = []
        self.resume_callbacks: list[Callable[[], None]] = []

    # -- transport callbacks --
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        # asyncio sets TCP_NODELAY only on sockets created with proto=IPPROTO_TCP, which the
        # listener is not: without it a data frame after a small one (a credit) waits for the
        # client's delayed ACK, 40 ms.
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "?"
        if sock is not None and sock.family == socket.AF_UNIX:
            credentials = peer_credentials(sock)
            self.peer = f"pid {credentials[0]} (uid {credentials[1]})" if credentials else "?"
            self.peer_uid = credentials[1] if credentials else None
        if not self.server.admit(self):
            transport.abort()
            return
        loop = self._loop
        self._last_heard = loop.time()
        self._watchdog = loop.call_later(HANDSHAKE_TIMEOUT, self._check_silence)

    def get_buffer(self, sizehint: int) -> memoryview:
        # Straight into the decoder: a large frame's body (a stream's data, a file write)
        # lands in the buffer it is decoded from, with no copy in between.
        return self._decoder.get_buffer(MAX_DATA_CHUNK)

    def buffer_updated(self, nbytes: int) -> None:
        self._decoder.buffer_updated(nbytes)
        self.data_received(b"")

    def data_received(self, data: bytes | memoryview) -> None:
        if self.suspended:
            self._resumed()
        self._last_heard = self._loop.time()
        try:
            self._decoder.feed(data)
        except FramingError as error:
            self._violation(str(error))
            self.close()
            return
        self._process()

    def _process(self) -> None:
        """Dispatch what the decoder holds. While the session is congested (the client does
        not read its replies: the transport paused writing; or MAX_FILE_WORK file requests
        are in flight) requests wait in arrival order, and once STALLED_LIMIT bytes of them
        wait the transport stops reading, so the kernel pushes back on the client (issue
        #20: 1,000 pipelined 1 MiB reads nobody read took the agent to 1 GiB). Stream
        messages go on meanwhile: their windows bound them, and a client blocked sending
        stream data while the agent stopped reading would never read again."""
        decoder = self._decoder
        try:
            while self._transport is not None:
                if self._stalled_size >= STALLED_LIMIT:
                    if not self._reading_paused:
                        self._reading_paused = True
                        self._transport.pause_reading()
                    return
                before = decoder.buffered
                try:
                    message = next(decoder)
                except StopIteration:
                    if not self._authenticated and decoder.buffered > PREAUTH_LIMIT:
                        self._violation(f"more than {PREAUTH_LIMIT} bytes before the handshake")
                    elif self._reading_paused:
                        self._reading_paused = False
                        self._transport.resume_reading()
                    return
                except MalformedMessage as error:
                    self._violation(str(error))
                    continue
                if (
                    self._authenticated
                    and isinstance(message, Request)
                    and (self._stalled or self._congested())
                ):
                    self._stalled.append(message)
                    self._stalled_size += before - decoder.buffered
                    continue
                self._dispatch(message)
        except FramingError as error:
            self._violation(str(error))
            self.close()

    def _congested(self) -> bool:
        return not self._writable.is_set() or len(self._thread_tasks) >= MAX_FILE_WORK

    def _uncongested(self) -> None:
        """Room again (the client read, or file work finished): serve the waiting requests;
        from the event loop, never inside the transport's own callback."""
        if self._stalled and not self._resume_scheduled and self._transport is not None:
            self._resume_scheduled = True
            self._loop.call_soon(self._serve_stalled)

    def _serve_stalled(self) -> None:
        self._resume_scheduled = False
        while self._stalled and self._transport is not None and not self._congested():
            self._on_request(self._stalled.popleft())
        if not self._stalled:
            self._stalled_size = 0
        if self._reading_paused and not self._stalled:
            self._process()  # what the decoder still holds, and reading again

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()
        self._uncongested()

    def _file_work_done(self, task: asyncio.Task[None]) -> None:
        self._thread_tasks.discard(task)
        self._uncongested()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._writable.set()
        for callback in self.close_callbacks:
            try:
                callback()
            except Exception as error:  # one failed clean-up must not skip the others
                log(f"clean-up after client {self.peer} failed: {error!r}")
        for stream in list(self._streams.values()):
            stream.abort()
        for task in self._tasks:
            task.cancel()
        self.server.session_closed(self, self._authenticated)
        # Thread-pool work cannot be cancelled: close the files only once it has finished, so
        # no fd number is closed (and reused) under a running read.
        if self._thread_tasks:
            closing = asyncio.ensure_future(asyncio.wait(list(self._thread_tasks)))
            closing.add_done_callback(lambda _: self.handles.close_all())
        else:
            self.handles.close_all()

    # -- used by streams --
    def send(self, message: Message) -> None:
        parts = encode_vectored(message)
        if len(parts) == 1:
            self._write(parts[0])
        else:
            self._write_bulk(parts)

    def _write_bulk(self, parts: list[bytes]) -> None:
        """A frame carrying a large payload: its buffers are written as they are (a transport
        write sends at once what the socket takes and copies only the rest)."""
        if self._transport is None or self._transport.is_closing():
            return
        self._flush()
        for part in parts:
            self._transport.write(part)

    def _write(self, frame: bytes) -> None:
        """Queue a frame; the small frames of one event-loop turn leave in one send() (each
        send is a trip through the TCP stack: with many small messages, batching saves a
        third of the agent's work). Bulk data is written at once, as before, so the
        transport's back-pressure (pause_writing -> drain) still holds."""
        if self._transport is None or self._transport.is_closing():
            return
        if not self._outgoing:
            self._loop.call_soon(self._flush)
        self._outgoing.append(frame)
        self._outgoing_size += len(frame)
        if self._outgoing_size >= _BATCH_LIMIT:
            self._flush()

    def _flush(self) -> None:
        frames, self._outgoing, self._outgoing_size = self._outgoing, [], 0
        if frames and self._transport is not None and not self._transport.is_closing():
            self._transport.write(frames[0] if len(frames) == 1 else b"".join(frames))

    async def drain(self) -> None:
        await self._writable.wait()

    @property
    def takes_descriptors(self) -> bool:
        """Whether the client is on this machine, at the other end of a Unix socket."""
        return self._unix_socket is not None

    def send_descriptor(self, message: Message, fd: int) -> bool:
        """Send `message` with a duplicate of `fd` attached (SCM_RIGHTS, see HANDOVER in the
        protocol); False, with nothing sent, when that cannot be done now."""
        if self._unix_socket is None or self._transport is None or self._transport.is_closing():
            return False
        self._flush()
        # The descriptor must travel with this frame's own bytes: only when nothing queued in
        # the transport would go out after them.
        if self._transport.get_write_buffer_size():
            return False
        frame = encode(message)
        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
        try:
            sent = self._unix_socket.sendmsg([frame], rights)
        except OSError:  # full (BlockingIOError) or broken: the transport notices the latter
            return False
        if sent < len(frame):
            self._transport.write(frame[sent:])  # the descriptor went with the first bytes
        return True

    def stream_finished(self, stream_id: int) -> None:
        self._streams.pop(stream_id, None)

    def reserve_stream(self, stream_id: int) -> None:
        if stream_id % 2 == 0:
            raise InvalidRequest(errno.EINVAL, "streams a client opens must have odd ids")
        if stream_id in self._streams or stream_id in self._reserved_streams:
            raise InvalidRequest(errno.EINVAL, f"stream {stream_id} is already in use")
        self._reserved_streams.add(stream_id)

    def release_stream(self, stream_id: int) -> None:
        self._reserved_streams.discard(stream_id)

    def attach_stream(self, stream: Stream) -> None:
        self._reserved_streams.discard(stream.stream_id)
        if self._transport is None:
            stream.abort()  # the client left while the connection was being made
        else:
            self._streams[stream.stream_id] = stream

    def close(self) -> None:
        self._flush()  # what was said last (a rejection, a violation) goes out first
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # -- messages --
    def _violation(self, problem: str) -> None:
        self.server.malformed_frames += 1
        self.send(ProtocolViolation(problem))
        if not self._authenticated:
            log(f"dropped client {self.peer} before the handshake: {problem}")
            self.close()

    def _dispatch(self, message: Message) -> None:
        if not self._authenticated:
            self._handshake(message)
        elif isinstance(message, Request):
            self._on_request(message)
        elif isinstance(message, StreamData | StreamCredit | StreamClose | StreamReset):
            self._on_stream_message(message)
        elif isinstance(message, Ping):
            self.send(Pong(message.nonce))
        elif isinstance(message, Pong):
            pass  # hearing anything at all is what keeps the session alive
        else:
            self._violation(f"a client does not send {type(message).__name__}")

    def _handshake(self, message: Message) -> None:
        if not isinstance(message, Hello):
            self._violation(f"the first message must be Hello, not {type(message).__name__}")
            return
        rejection = check_hello(message, self.server.token_digest)
        if rejection is not None:
            log(f"rejected client {self.peer} ({rejection.reason}): {rejection.message}")
            self.send(rejection)
            self.close()
            return
        self._authenticated = True
        if self._watchdog is not None:  # from now on the client's silence is what counts
            self._watchdog.cancel()
        self._watchdog = self._loop.call_later(PEER_SILENCE_TIMEOUT, self._check_silence)
        self.server.session_opened(self)
        self.send(HelloOk(PROTOCOL_VERSION, self.server.session_info()))

    def _on_request(self, request: Request) -> None:
        if request.kind in REQUESTS:
            self.counts[request.kind] += 1
            self.server.totals[request.kind] += 1
        try:
            fields = validate_request(request.kind, request.fields)
        except InvalidRequest as error:
            self.send(error_reply(request.id, error))
            return
        handler = HANDLERS[request.kind]
        # File work on local filesystems is quicker done than handed to a thread (mounts.py).
        if handler.mode == "inline" or (
            handler.mode == "thread" and self.server.mounts.inline_ok()
        ):
            try:
                reply: Fields = handler.run(self, fields)  # type: ignore[assignment]
            except Exception as error:
                self.send(error_reply(request.id, error))
            else:
                self._send_reply(request.id, reply)
            return
        task = asyncio.create_task(self._serve(request.id, handler, fields))
        if handler.mode == "thread":
            self._thread_tasks.add(task)
            task.add_done_callback(self._file_work_done)
        else:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve(self, request_id: int, handler: Handler, fields: Fields) -> None:
        try:
            if handler.mode == "thread":
                reply = await asyncio.to_thread(handler.run, self, fields)
            else:
                reply = await handler.run(self, fields)  # type: ignore[misc]
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self.send(error_reply(request_id, error))
            return
        self._send_reply(request_id, reply)  # type: ignore[arg-type]
        await self.drain()

    def _send_reply(self, request_id: int, fields: dict[str, Any]) -> None:
        try:
            parts = encode_vectored(Reply(request_id, fields))
        except ProtocolError as error:
            self.send(ErrorReply(request_id, errno.EMSGSIZE, f"reply does not fit: {error}"))
            return
        if len(parts) == 1:
            self._write(parts[0])
        else:
            self._write_bulk(parts)

    def _on_stream_message(
        self, message: StreamData | StreamCredit | StreamClose | StreamReset
    ) -> None:
        stream = self._streams.get(message.stream)
        if stream is None:
            return  # closed here while the message was in flight
        if isinstance(message, StreamData):
            stream.on_data(message.data)
        elif isinstance(message, StreamCredit):
            stream.on_credit(message.amount)
        elif isinstance(message, StreamClose):
            stream.on_close()
        else:
            stream.on_reset()

    def _check_silence(self) -> None:
        loop = asyncio.get_running_loop()
        if self._transport is None:
            return
        if not self._authenticated:
            log(f"dropped client {self.peer}: no handshake within {HANDSHAKE_TIMEOUT:.0f} s")
            self.abort()
            return
        silent_for = loop.time() - self._last_heard
        if silent_for < PEER_SILENCE_TIMEOUT:
            self._watchdog = loop.call_later(
                PEER_SILENCE_TIMEOUT - silent_for, self._check_silence
            )
            return
        # A silent client whose connection is open is most likely stopped (Ctrl-Z) or asleep:
        # its session is kept, so that it carries on when it is back; a client that died
        # closes its connection (connection_lost). Only a connection over the network, which
        # can hang without closing, is given up after SUSPENDED_SESSION_LIMIT.
        if not self.suspended:
            self.suspended = True
            log(
                f"client {self.peer} silent for {silent_for:.0f} s (stopped or asleep?): "
                "keeping its session; its stolen ports go back to the target until it is back"
            )
            self._run_callbacks(self.suspend_callbacks, "suspending")
        if self._unix_socket is None and silent_for >= SUSPENDED_SESSION_LIMIT:
            log(f"dropped client {self.peer}: nothing heard for {silent_for:.0f} s")
            self.abort()
            return
        self._watchdog = loop.call_later(PEER_SILENCE_TIMEOUT, self._check_silence)

    def _resumed(self) -> None:
        """The first frame from a suspended client: it is back."""
        self.suspended = False
        log(f"client {self.peer} is back after {self._loop.time() - self._last_heard:.0f} s")
        self._run_callbacks(self.resume_callbacks, "resuming")

    def _run_callbacks(self, callbacks: list[Callable[[], None]], what: str) -> None:
        for callback in callbacks:
            try:
                callback()
            except Exception as error:  # one failure must not skip the others
                log(f"{what} client {self.peer} failed: {error!r}")
