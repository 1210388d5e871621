"""Length-prefixed frames: a 4-byte big-endian body length, then the body.

Sans-I/O: `FrameDecoder.feed()` takes whatever bytes arrived; iterating yields complete bodies.
A reader that can receive into a buffer (recv_into, asyncio's BufferedProtocol) asks
`get_buffer()` where the next bytes go and reports them with `buffer_updated()` instead: a
large frame's body is then received straight into the bytes it is returned in, with no copy in
between (a 1 MiB file chunk was copied three times on its way to the decoder's caller).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from mirrord_trace.protocol.errors import FramingError

# Large enough for an inline file (1 MiB) plus metadata, small enough that a hostile length
# prefix cannot make either side allocate much.
MAX_FRAME_SIZE = 4 * 1024 * 1024

_LENGTH = struct.Struct(">I")
HEADER_SIZE = _LENGTH.size
# A frame whose body is at least this long is received into a buffer of its own (see above).
_DIRECT_BODY = 64 * 1024
# get_buffer() offers at least this much room for small frames.
_RECEIVE_ROOM = 256 * 1024


def encode_frame(body: bytes) -> bytes:
    """Prefix `body` with its length; raises FramingError when it exceeds MAX_FRAME_SIZE."""
    if len(body) > MAX_FRAME_SIZE:
        raise FramingError(f"frame of {len(body)} bytes exceeds the {MAX_FRAME_SIZE}-byte limit")
    return _LENGTH.pack(len(body)) + body


def encode_frame_parts(size: int, parts: list[bytes], payload: bytes) -> list[bytes]:
    """The frame of a `size`-byte body made of `parts` then `payload`, as two buffers: the
    header (length prefix and `parts`) and the payload itself, never copied (see
    messages.encode_vectored)."""
    if size > MAX_FRAME_SIZE:
        raise FramingError(f"frame of {size} bytes exceeds the {MAX_FRAME_SIZE}-byte limit")
    return [b"".join([_LENGTH.pack(size), *parts]), payload]


class FrameDecoder:
    """Splits a byte stream into frame bodies, whatever the sizes of the pieces fed in.

    Memory stays bounded: a length prefix above MAX_FRAME_SIZE fails at once instead of
    waiting for the body. After a FramingError the decoder keeps raising it.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._position = 0  # where the next frame starts in _buffer
        self._end = 0  # how much of _buffer holds received bytes (get_buffer's room follows)
        self._failure: FramingError | None = None
        # A large frame's body being received in place: the body, and how much of it arrived.
        self._body: bytearray | None = None
        self._body_filled = 0
        self._lent: memoryview | None = None
        self._lending_body = False

    def feed(self, data: bytes | memoryview) -> None:
        """Take `data` (copied: the caller may reuse its buffer at once)."""
        if self._failure is not None:
            raise self._failure
        while data:
            room = self.get_buffer(len(data))
            size = min(len(room), len(data))
            room[:size] = data[:size]
            self.buffer_updated(size)
            data = data[size:]

    def get_buffer(self, sizehint: int = _RECEIVE_ROOM) -> memoryview:
        """Where the next received bytes should go (valid until buffer_updated)."""
        if self._failure is not None:
            raise self._failure
        body = self._body
        self._lending_body = body is not None and self._body_filled < len(body)
        if self._lending_body:
            self._lent = memoryview(body)[self._body_filled :]  # type: ignore[arg-type]
            return self._lent
        # (A complete body not yet taken: what follows it goes to the main buffer, where the
        # frames after it start.)
        if self._position == self._end:
            self._position = self._end = 0
        room = max(sizehint, _RECEIVE_ROOM // 4)
        if len(self._buffer) - self._end < room:
            if self._position:
                # Compact lazily so a burst of small frames does not copy the tail each time.
                del self._buffer[: self._position]
                self._end -= self._position
                self._position = 0
            if len(self._buffer) - self._end < room:
                self._buffer.extend(bytes(self._end + max(room, _RECEIVE_ROOM) - len(self._buffer)))
        self._lent = memoryview(self._buffer)[self._end :]
        return self._lent

    def buffer_updated(self, nbytes: int) -> None:
        """`nbytes` were written at the start of the last get_buffer()."""
        if self._lent is not None:
            self._lent.release()
            self._lent = None
        if self._lending_body:
            self._body_filled += nbytes
        else:
            self._end += nbytes

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames."""
        return self._end - self._position + self._body_filled

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._failure is not None:
            raise self._failure
        body = self._body
        if body is not None:
            if self._body_filled < len(body):
                raise StopIteration
            self._body, self._body_filled = None, 0
            return body  # type: ignore[return-value]  # a bytearray: msgpack reads either
        available = self._end - self._position
        if available < HEADER_SIZE:
            raise StopIteration
        (length,) = _LENGTH.unpack_from(self._buffer, self._position)
        if length > MAX_FRAME_SIZE:
            self._failure = FramingError(
                f"peer announced a {length}-byte frame; the limit is {MAX_FRAME_SIZE} bytes"
            )
            raise self._failure
        start = self._position + HEADER_SIZE
        end = start + length
        if end > self._end:
            if length >= _DIRECT_BODY:
                # The rest of this body goes straight into its own buffer.
                self._body = bytearray(length)
                self._body_filled = self._end - start
                with memoryview(self._buffer) as view:
                    self._body[: self._body_filled] = view[start : self._end]
                self._position = self._end
            raise StopIteration
        # Through a memoryview: slicing the bytearray itself would copy the body twice.
        with memoryview(self._buffer) as view:
            body_bytes = bytes(view[start:end])
        self._position = end
        return body_bytes
