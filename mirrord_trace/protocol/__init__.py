"""The wire protocol shared by the local side and the agent (sans-I/O: no sockets in here).

framing    length-prefixed frames and their bounded decoder
messages   the message dataclasses and their msgpack encoding
handshake  protocol version and session token checks
flow       per-stream credit-based flow control
keepalive  ping interval and dead-peer timeout
requests   request kinds, their fields and replies
"""

from mirrord_trace.protocol.errors import (
    FlowControlViolation,
    FramingError,
    MalformedMessage,
    ProtocolError,
)
from mirrord_trace.protocol.flow import MAX_DATA_CHUNK, STREAM_WINDOW, ReceiveWindow, SendCredit
from mirrord_trace.protocol.framing import MAX_FRAME_SIZE, FrameDecoder, encode_frame
from mirrord_trace.protocol.handshake import (
    PROTOCOL_VERSION,
    REJECT_BAD_TOKEN,
    REJECT_BAD_VERSION,
    check_hello,
    new_token,
    token_digest,
    tokens_match,
)
from mirrord_trace.protocol.keepalive import (
    AGENT_SILENCE_TIMEOUT,
    CLIENT_KEEPALIVE_INTERVAL,
    KEEPALIVE_INTERVAL,
    PEER_SILENCE_TIMEOUT,
)
from mirrord_trace.protocol.messages import (
    MESSAGE_TYPES,
    ErrorReply,
    Hello,
    HelloOk,
    HelloRejected,
    Message,
    MessageDecoder,
    Ping,
    Pong,
    ProtocolViolation,
    Reply,
    Request,
    StreamClose,
    StreamCredit,
    StreamData,
    StreamOpen,
    StreamReset,
    decode_body,
    encode,
    encode_body,
    encode_vectored,
)
from mirrord_trace.protocol.requests import (
    HANDOVER,
    INLINE_READ_LIMIT,
    MAX_READ_SIZE,
    REQUESTS,
    STAT_FIELDS,
    InvalidRequest,
    validate_request,
)

__all__ = [
    "AGENT_SILENCE_TIMEOUT",
    "CLIENT_KEEPALIVE_INTERVAL",
    "HANDOVER",
    "INLINE_READ_LIMIT",
    "KEEPALIVE_INTERVAL",
    "MAX_DATA_CHUNK",
    "MAX_FRAME_SIZE",
    "MAX_READ_SIZE",
    "MESSAGE_TYPES",
    "PEER_SILENCE_TIMEOUT",
    "PROTOCOL_VERSION",
    "REJECT_BAD_TOKEN",
    "REJECT_BAD_VERSION",
    "REQUESTS",
    "STAT_FIELDS",
    "STREAM_WINDOW",
    "ErrorReply",
    "FlowControlViolation",
    "FrameDecoder",
    "FramingError",
    "Hello",
    "HelloOk",
    "HelloRejected",
    "InvalidRequest",
    "MalformedMessage",
    "Message",
    "MessageDecoder",
    "Ping",
    "Pong",
    "ProtocolError",
    "ProtocolViolation",
    "ReceiveWindow",
    "Reply",
    "Request",
    "SendCredit",
    "StreamClose",
    "StreamCredit",
    "StreamData",
    "StreamOpen",
    "StreamReset",
    "check_hello",
    "decode_body",
    "encode",
    "encode_body",
    "encode_frame",
    "encode_vectored",
    "new_token",
    "token_digest",
    "tokens_match",
    "validate_request",
]
