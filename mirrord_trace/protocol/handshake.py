"""Session handshake: protocol version and session token.

The client's first frame is Hello{version, token}; the agent answers HelloOk or HelloRejected
and, on rejection, closes the connection.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from mirrord_trace.protocol.messages import Hello, HelloRejected

PROTOCOL_VERSION = 1

REJECT_BAD_TOKEN = "bad-token"
REJECT_BAD_VERSION = "bad-version"
REJECT_REASONS = (REJECT_BAD_TOKEN, REJECT_BAD_VERSION)

# How long an agent waits for Hello before dropping a connection: a client sends it at once,
# so this only bounds how long a stranger's connection holds anything.
HANDSHAKE_TIMEOUT = 5.0
# What an agent buffers from a connection before its Hello: a Hello with a 64-character token
# is under 100 bytes, so a few KiB is plenty, and a stranger cannot make the agent hold more.
PREAUTH_LIMIT = 4 * 1024


def new_token() -> str:
    """A fresh session token: 256 random bits, hex encoded."""
    return secrets.token_hex(32)


def token_digest(token: str) -> str:
    """What an agent needs to know of a token to check it: its SHA-256, hex encoded. A
    Kubernetes agent's spec holds only this, so whoever may read the spec still cannot
    present the token (256 random bits: the digest cannot be inverted or guessed)."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def tokens_match(presented: str, expected_digest: str) -> bool:
    # Constant-time comparison so the digest cannot be guessed byte by byte from timings.
    return hmac.compare_digest(token_digest(presented).encode(), expected_digest.encode())


def check_hello(hello: Hello, expected_digest: str) -> HelloRejected | None:
    """None when the client may proceed, else the rejection to send back."""
    if hello.version != PROTOCOL_VERSION:
        return HelloRejected(
            reason=REJECT_BAD_VERSION,
            message=(
                f"the agent speaks protocol version {PROTOCOL_VERSION} but the client speaks "
                f"version {hello.version}: use the same mirrord-trace version on both sides"
            ),
        )
    if not tokens_match(hello.token, expected_digest):
        return HelloRejected(
            reason=REJECT_BAD_TOKEN,
            message="the session token does not match the agent's: connect with the token "
            "the agent was started with",
        )
    return None
