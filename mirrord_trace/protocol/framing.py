"""Length-prefixed frames: a 4-byte big-endian body length, then the body.

Sans-I/O: `FrameDecoder.feed()` takes whatever bytes arrived; iterating yields complete bodies.
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


def encode_frame(body: bytes) -> bytes:
    """Prefix `body` with its length; raises FramingError when it exceeds MAX_FRAME_SIZE."""
    if len(body) > MAX_FRAME_SIZE:
        raise FramingError(f"frame of {len(body)} bytes exceeds the {MAX_FRAME_SIZE}-byte limit")
    return _LENGTH.pack(len(body)) + body


class FrameDecoder:
    """Splits a byte stream into frame bodies, whatever the sizes of the pieces fed in.

    Memory stays bounded: a length prefix above MAX_FRAME_SIZE fails at once instead of
    waiting for the body. After a FramingError the decoder keeps raising it.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._position = 0
        self._failure: FramingError | None = None

    def feed(self, data: bytes | memoryview) -> None:
        """Take `data` (copied: the caller may reuse its buffer at once)."""
        if self._failure is not None:
            raise self._failure
        if self._position:
            # Compact lazily so a burst of small frames does not copy the tail each time.
            del self._buffer[: self._position]
            self._position = 0
        self._buffer += data

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames."""
        return len(self._buffer) - self._position

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._failure is not None:
            raise self._failure
        available = len(self._buffer) - self._position
        if available < HEADER_SIZE:
            raise StopIteration
        (length,) = _LENGTH.unpack_from(self._buffer, self._position)
        if length > MAX_FRAME_SIZE:
            self._failure = FramingError(
                f"peer announced a {length}-byte frame; the limit is {MAX_FRAME_SIZE} bytes"
            )
            raise self._failure
        end = self._position + HEADER_SIZE + length
        if end > len(self._buffer):
            raise StopIteration
        # Through a memoryview: slicing the bytearray itself would copy the body twice, and
        # bodies are up to a stream chunk (256 KiB) long.
        with memoryview(self._buffer) as view:
            body = bytes(view[self._position + HEADER_SIZE : end])
        self._position = end
        return body
