"""Property tests of the wire protocol: round trips, fragmentation, garbage, flow control."""

from __future__ import annotations

import errno
import itertools
import os
import struct
import typing
from dataclasses import fields

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mirrord_trace import protocol
from mirrord_trace.protocol import (
    MAX_FRAME_SIZE,
    MESSAGE_TYPES,
    PROTOCOL_VERSION,
    REJECT_BAD_TOKEN,
    REJECT_BAD_VERSION,
    STREAM_WINDOW,
    FlowControlViolation,
    FramingError,
    Hello,
    MalformedMessage,
    MessageDecoder,
    ProtocolError,
    ReceiveWindow,
    Request,
    SendCredit,
    check_hello,
    encode,
    encode_frame,
    encode_vectored,
    new_token,
    token_digest,
)
from mirrord_trace.protocol.framing import HEADER_SIZE
from mirrord_trace.protocol.requests import InvalidRequest, validate_request

# Strings as the agent sees them: any Linux bytes, carried through surrogateescape.
texts = st.one_of(st.text(max_size=20), st.binary(max_size=20).map(os.fsdecode))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False),
    texts,
    st.binary(max_size=40),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(texts, children, max_size=4)
    ),
    max_leaves=12,
)
field_strategies = {
    int: st.integers(min_value=0, max_value=2**64 - 1),
    str: texts,
    bytes: st.binary(max_size=200),
    dict: st.dictionaries(texts, values, max_size=5),
}


def message_strategy(cls: type) -> st.SearchStrategy:
    hints = typing.get_type_hints(cls)
    arguments = {
        f.name: field_strategies[typing.get_origin(hints[f.name]) or hints[f.name]]
        for f in fields(cls)
    }
    return st.builds(cls, **arguments)


messages = st.one_of([message_strategy(cls) for cls in MESSAGE_TYPES])


def decode_all(chunks: list[bytes]) -> list:
    decoder = MessageDecoder()
    out = []
    for chunk in chunks:
        decoder.feed(chunk)
        out.extend(decoder)
    return out


@given(messages)
def test_every_message_round_trips(message) -> None:
    assert decode_all([encode(message)]) == [message]


@given(st.lists(messages, max_size=8), st.data())
def test_any_split_of_a_stream_decodes_identically(batch, data) -> None:
    stream = b"".join(encode(m) for m in batch)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    bounds = [0, *cuts, len(stream)]
    chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    assert decode_all(chunks) == batch


@given(st.lists(st.binary(max_size=300), max_size=10))
def test_random_bytes_give_messages_or_a_protocol_error(chunks) -> None:
    decoder = MessageDecoder()
    try:
        for chunk in chunks:
            decoder.feed(chunk)
            while True:
                try:
                    next(decoder)
                except MalformedMessage:
                    continue  # one bad frame; the next frame is still readable
                except StopIteration:
                    break
            # Whatever arrived, only the frame in progress is kept, and it is bounded.
            assert decoder.buffered <= HEADER_SIZE + MAX_FRAME_SIZE
    except ProtocolError:
        pass


@given(st.lists(st.binary(max_size=200), min_size=1, max_size=10))
def test_random_frame_bodies_give_messages_or_malformed(bodies) -> None:
    """Well-framed garbage: each bad body is reported alone and decoding continues."""
    good = Request(id=7, kind="noop", fields={})
    decoder = MessageDecoder()
    decoder.feed(b"".join(encode_frame(body) for body in bodies) + encode(good))
    seen = []
    while True:
        try:
            seen.append(next(decoder))
        except MalformedMessage:
            continue
        except StopIteration:
            break
    assert seen[-1] == good


def test_oversized_length_prefix_fails_before_the_body_arrives() -> None:
    decoder = MessageDecoder()
    decoder.feed(struct.pack(">I", MAX_FRAME_SIZE + 1))
    with pytest.raises(FramingError, match="limit"):
        next(decoder)
    with pytest.raises(FramingError):
        decoder.feed(b"more")


def test_encoding_an_oversized_message_is_refused() -> None:
    with pytest.raises(FramingError):
        encode(Request(id=1, kind="noop", fields={"blob": b"x" * MAX_FRAME_SIZE}))


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        (msgpack.packb([99, 1]), "unknown message kind"),
        (msgpack.packb({"t": 1}), "array"),
        (msgpack.packb([Hello.TAG, 1]), "takes 2 fields"),
        (msgpack.packb([Hello.TAG, True, "t"]), "unsigned integer"),
        (msgpack.packb([Request.TAG, 1, "k", {1: 2}], strict_types=False), "msgpack|string keys"),
        (b"\xc1", "msgpack"),
    ],
)
def test_malformed_bodies_say_what_is_wrong(body: bytes, complaint: str) -> None:
    decoder = MessageDecoder()
    decoder.feed(encode_frame(body))
    with pytest.raises(MalformedMessage, match=complaint):
        next(decoder)


@given(
    st.lists(
        st.tuples(st.sampled_from(["send", "consume"]), st.integers(1, STREAM_WINDOW)),
        max_size=60,
    )
)
def test_flow_control_bounds_what_a_receiver_buffers(operations) -> None:
    sender = SendCredit()
    receiver = ReceiveWindow()
    for operation, amount in operations:
        if operation == "send":
            allowed = sender.take(amount)
            if allowed:
                receiver.on_data(allowed)
        else:
            consumed = min(amount, receiver.buffered)
            grant = receiver.on_consumed(consumed)
            if grant:
                sender.grant(grant)
        assert receiver.buffered <= STREAM_WINDOW
        assert sender.available + receiver.buffered <= STREAM_WINDOW
    # Liveness: once the reader catches up, the sender can always send again.
    grant = receiver.on_consumed(receiver.buffered)
    if grant:
        sender.grant(grant)
    assert sender.available >= STREAM_WINDOW // 2


def test_sending_beyond_the_credit_is_a_violation() -> None:
    receiver = ReceiveWindow()
    receiver.on_data(STREAM_WINDOW)
    with pytest.raises(FlowControlViolation):
        receiver.on_data(1)


def test_granting_beyond_the_window_is_a_violation() -> None:
    with pytest.raises(FlowControlViolation):
        SendCredit().grant(1)


def test_handshake_checks_version_then_token() -> None:
    token = new_token()
    digest = token_digest(token)
    assert check_hello(Hello(PROTOCOL_VERSION, token), digest) is None
    rejected = check_hello(Hello(PROTOCOL_VERSION, new_token()), digest)
    assert rejected is not None and rejected.reason == REJECT_BAD_TOKEN
    # What the agent knows (the digest, e.g. read from a pod spec) is not a token.
    rejected = check_hello(Hello(PROTOCOL_VERSION, digest), digest)
    assert rejected is not None and rejected.reason == REJECT_BAD_TOKEN
    rejected = check_hello(Hello(PROTOCOL_VERSION + 1, token), digest)
    assert rejected is not None and rejected.reason == REJECT_BAD_VERSION
    assert str(PROTOCOL_VERSION) in rejected.message


def test_tokens_are_long_and_fresh() -> None:
    tokens = {new_token() for _ in range(100)}
    assert len(tokens) == 100
    assert all(len(bytes.fromhex(t)) * 8 >= 128 for t in tokens)


@pytest.mark.parametrize(
    ("kind", "fields", "code", "complaint"),
    [
        ("fs.nope", {}, errno.ENOSYS, "unknown request kind"),
        ("fs.stat", {}, errno.EINVAL, "missing field 'path'"),
        ("fs.stat", {"path": 3}, errno.EINVAL, "'path' must be str"),
        ("fs.read", {"handle": True, "offset": 0, "size": 1}, errno.EINVAL, "'handle'"),
        ("fs.stat", {"path": "/", "colour": 1}, errno.EINVAL, "unknown fields"),
        (
            "dns.query",
            {"payload": b"", "nameserver": "x", "transport": "sctp"},
            errno.EINVAL,
            "transport",
        ),
    ],
)
def test_invalid_requests_carry_an_errno(kind, fields, code, complaint) -> None:
    with pytest.raises(InvalidRequest, match=complaint) as caught:
        validate_request(kind, fields)
    assert caught.value.errno == code


def test_request_defaults_are_filled_in() -> None:
    assert validate_request("fs.stat", {"path": "/etc"}) == {"path": "/etc", "follow": True}


# Large payloads take the zero-copy paths: frames built around the payload (encode_vectored)
# and bodies received into their own buffer (get_buffer); both must give back exactly what was
# sent, whichever way the bytes were split on the way.
large_messages = st.one_of(
    st.builds(
        protocol.StreamData,
        st.integers(0, 2**64 - 1),
        st.binary(min_size=16 * 1024, max_size=300_000),
    ),
    st.builds(
        protocol.Reply,
        st.integers(0, 2**64 - 1),
        st.fixed_dictionaries(
            {"stat": st.just({"size": 1}), "data": st.binary(min_size=16 * 1024, max_size=300_000)}
        ),
    ),
)


@given(st.lists(st.one_of(messages, large_messages), max_size=6), st.data())
def test_large_payloads_survive_any_split_received_either_way(batch, data) -> None:
    wire = b"".join(b"".join(encode_vectored(message)) for message in batch)
    assert wire == b"".join(encode(message) for message in batch)
    decoder = MessageDecoder()
    decoded = []
    position = 0
    while position < len(wire):
        size = data.draw(st.integers(1, 400_000))
        if data.draw(st.booleans()):
            decoder.feed(wire[position : position + size])
        else:  # as a recv_into / BufferedProtocol reader does
            room = decoder.get_buffer(size)
            size = min(len(room), size, len(wire) - position)
            room[:size] = wire[position : position + size]
            decoder.buffer_updated(size)
        position += size
        decoded.extend(decoder)
    assert decoded == batch
    assert decoder.buffered == 0
