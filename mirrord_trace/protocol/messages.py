"""The messages exchanged between the local side and the agent, and their msgpack encoding.

Each message is a frozen dataclass with a wire tag, declared by `wire_message(tag)`. On the
wire a message is the msgpack array `[tag, field1, field2, ...]` inside one frame. Decoding
checks the tag, the arity and every field's type, so a handler never sees a message of the
wrong shape.

Strings are UTF-8 with surrogateescape on both sides: paths, names and environment entries are
Linux bytes, and this carries any byte sequence through a `str` exactly as os.fsdecode does.
"""

from __future__ import annotations

import struct
import threading
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from typing import Any

import msgpack

from mirrord_trace.protocol.errors import MalformedMessage, ProtocolError
from mirrord_trace.protocol.framing import FrameDecoder, encode_frame, encode_frame_parts

UNICODE_ERRORS = "surrogateescape"
_MAX_UINT64 = 2**64 - 1

_T = typing.TypeVar("_T")


@typing.dataclass_transform(frozen_default=True)
def wire_message(tag: int) -> Callable[[type[_T]], type[_T]]:
    """Declares a message: a frozen, slotted dataclass of its fields, with wire tag `tag`
    (the first item of its msgpack array)."""

    def declare(cls: type[_T]) -> type[_T]:
        declared = dataclass(frozen=True, slots=True)(cls)
        declared.TAG = tag  # type: ignore[attr-defined]
        return declared

    return declare


@wire_message(1)
class Hello:
    """Client -> agent, first frame of a session."""

    version: int
    token: str


@wire_message(2)
class HelloOk:
    """Agent -> client: the session is open. `session` describes the agent and its limits."""

    version: int
    session: dict[str, Any]


@wire_message(3)
class HelloRejected:
    """Agent -> client: no session. `reason` is one of handshake.REJECT_REASONS."""

    reason: str
    message: str


@wire_message(4)
class Request:
    """Client -> agent. Replies come back with the same `id`, in any order."""

    id: int
    kind: str
    fields: dict[str, Any] = field(default_factory=dict)


@wire_message(5)
class Reply:
    """Agent -> client: request `id` succeeded."""

    id: int
    fields: dict[str, Any] = field(default_factory=dict)


@wire_message(6)
class ErrorReply:
    """Agent -> client: request `id` failed with a Linux errno the program can be given."""

    id: int
    errno: int
    message: str


@wire_message(7)
class StreamOpen:
    """Agent -> client: a stream the agent opened (an incoming connection), with its details.

    Streams opened by a client request carry odd ids chosen by the client; streams the agent
    opens carry even ids, so the two never collide.
    """

    stream: int
    info: dict[str, Any] = field(default_factory=dict)


@wire_message(8)
class StreamData:
    """Bytes for a stream; never more than the receiver has granted. One datagram for UDP."""

    stream: int
    data: bytes


@wire_message(9)
class StreamCredit:
    """The receiver consumed bytes: the sender may send `amount` more bytes on `stream`."""

    stream: int
    amount: int


@wire_message(10)
class StreamClose:
    """The sender will send no more data on `stream` (a half close, like shutdown(SHUT_WR))."""

    stream: int


@wire_message(11)
class StreamReset:
    """`stream` is aborted in both directions; `errno` says why (e.g. ECONNRESET)."""

    stream: int
    errno: int
    message: str


@wire_message(12)
class Ping:
    nonce: int


@wire_message(13)
class Pong:
    nonce: int


@wire_message(14)
class ProtocolViolation:
    """Tells the peer what it sent wrong, so both sides can print the same clear message."""

    message: str


Message = (
    Hello
    | HelloOk
    | HelloRejected
    | Request
    | Reply
    | ErrorReply
    | StreamOpen
    | StreamData
    | StreamCredit
    | StreamClose
    | StreamReset
    | Ping
    | Pong
    | ProtocolViolation
)

MESSAGE_TYPES: tuple[type[Message], ...] = typing.get_args(Message)


def _field_checks(cls: type) -> tuple[tuple[str, type], ...]:
    hints = typing.get_type_hints(cls)
    checks = []
    for f in fields(cls):
        hint = hints[f.name]
        checks.append((f.name, typing.get_origin(hint) or hint))
    return tuple(checks)


_BY_TAG: dict[int, tuple[type, tuple[tuple[str, type], ...]]] = {
    cls.TAG: (cls, _field_checks(cls)) for cls in MESSAGE_TYPES
}
_FIELD_NAMES: dict[type, tuple[str, ...]] = {
    cls: tuple(name for name, _ in checks) for cls, checks in _BY_TAG.values()
}


_packers = threading.local()


def _packer() -> msgpack.Packer:
    """This thread's Packer: msgpack.packb builds a new one per call, which was half the cost
    of encoding a data frame. (A Packer starts afresh after a failed pack.)"""
    packer: msgpack.Packer | None = getattr(_packers, "packer", None)
    if packer is None:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True, unicode_errors=UNICODE_ERRORS)
    return packer


def encode_body(message: Message) -> bytes:
    """The msgpack body of `message` (no frame header)."""
    names = _FIELD_NAMES[type(message)]
    try:
        return _packer().pack([message.TAG, *[getattr(message, name) for name in names]])
    except (TypeError, ValueError, OverflowError) as error:
        raise ProtocolError(f"cannot encode {type(message).__name__}: {error}") from error


# A bytes value at least this long, last in its message (StreamData's data, a file read's
# reply), is never copied: msgpack would copy it in, out again, and the length prefix once more
# (three copies of every byte a stream or a remote read moves, each a fresh 256 KiB-1 MiB
# allocation the kernel maps page by page).
_LARGE_PAYLOAD = 16 * 1024
_BIN32 = struct.Struct(">BI")


def encode(message: Message) -> bytes:
    """One complete frame carrying `message`."""
    parts = encode_vectored(message)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def encode_vectored(message: Message) -> list[bytes]:
    """`message`'s frame as buffers to send one after the other (sendmsg, or one transport
    write each): a large payload stays the object it is, behind a small header."""
    kind = type(message)
    if kind is StreamData and len(message.data) >= _LARGE_PAYLOAD:  # type: ignore[union-attr]
        return _encode_with_payload(message, [StreamData.TAG, message.stream], None)  # type: ignore[union-attr]
    if kind is Reply and message.fields:  # type: ignore[union-attr]
        fields: dict[str, Any] = message.fields  # type: ignore[union-attr]
        last = next(reversed(fields))
        if type(fields[last]) is bytes and len(fields[last]) >= _LARGE_PAYLOAD:
            return _encode_with_payload(message, [Reply.TAG, message.id], fields)  # type: ignore[union-attr]
    return [encode_frame(encode_body(message))]


def _encode_with_payload(
    message: Message, head: list[Any], fields: dict[str, Any] | None
) -> list[bytes]:
    """The frame of a message whose last value is a large bytes payload: msgpack's encoding,
    built around the payload (a bin 32 header, then the bytes as they are)."""
    packer = _packer()
    try:
        parts = [packer.pack_array_header(len(head) + 1), *(packer.pack(item) for item in head)]
        if fields is None:
            payload: bytes = message.data  # type: ignore[union-attr]
        else:
            *others, last = fields
            parts.append(packer.pack_map_header(len(fields)))
            for key in others:
                parts += (packer.pack(key), packer.pack(fields[key]))
            parts.append(packer.pack(last))
            payload = fields[last]
    except (TypeError, ValueError, OverflowError) as error:
        raise ProtocolError(f"cannot encode {type(message).__name__}: {error}") from error
    parts.append(_BIN32.pack(0xC6, len(payload)))
    size = sum(map(len, parts)) + len(payload)
    return encode_frame_parts(size, parts, payload)


def _check_value(cls: type, name: str, expected: type, value: object) -> None:
    if expected is int:
        # bool is an int subclass in Python but a distinct msgpack type: refuse it.
        if type(value) is not int or not 0 <= value <= _MAX_UINT64:
            raise MalformedMessage(f"{cls.__name__}.{name} must be an unsigned integer")
    elif expected is dict:
        if type(value) is not dict or not all(type(key) is str for key in value):
            raise MalformedMessage(f"{cls.__name__}.{name} must be a map with string keys")
    elif type(value) is not expected:
        raise MalformedMessage(f"{cls.__name__}.{name} must be {expected.__name__}")


def decode_body(body: bytes) -> Message:
    """Parse one frame body; raises MalformedMessage for anything that is not a message."""
    try:
        value = msgpack.unpackb(
            body, raw=False, unicode_errors=UNICODE_ERRORS, strict_map_key=True, use_list=True
        )
    # msgpack's C extension raises several exception types for bad input (ValueError,
    # TypeError for unhashable keys, its own UnpackException...); all of them mean garbage.
    except Exception as error:
        raise MalformedMessage(f"frame body is not valid msgpack: {error}") from None
    if type(value) is not list or not value:
        raise MalformedMessage("a message must be a non-empty msgpack array")
    tag = value[0]
    entry = _BY_TAG.get(tag) if type(tag) is int else None
    if entry is None:
        raise MalformedMessage(f"unknown message kind {tag!r}")
    cls, checks = entry
    if len(value) != len(checks) + 1:
        raise MalformedMessage(
            f"{cls.__name__} takes {len(checks)} fields, the frame has {len(value) - 1}"
        )
    del value[0]
    for (name, expected), item in zip(checks, value, strict=True):
        # The usual case checked inline (every data frame comes here); anything else goes
        # to _check_value, which raises with the precise complaint.
        kind = type(item)
        if kind is expected and (
            (kind is not int or 0 <= item <= _MAX_UINT64)
            and (kind is not dict or all(type(key) is str for key in item))
        ):
            continue
        _check_value(cls, name, expected, item)
    return cls(*value)


class MessageDecoder:
    """Bytes in, messages out.

    Iteration raises MalformedMessage for one bad frame and then continues with the next
    frame if iterated again; it raises FramingError when the stream itself is broken.
    """

    def __init__(self) -> None:
        self._frames = FrameDecoder()

    def feed(self, data: bytes | memoryview) -> None:
        self._frames.feed(data)

    def get_buffer(self, sizehint: int = 0) -> memoryview:
        """Where to receive the next bytes into (see FrameDecoder.get_buffer)."""
        return self._frames.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self._frames.buffer_updated(nbytes)

    @property
    def buffered(self) -> int:
        return self._frames.buffered

    def __iter__(self) -> Iterator[Message]:
        return self

    def __next__(self) -> Message:
        return decode_body(next(self._frames))
