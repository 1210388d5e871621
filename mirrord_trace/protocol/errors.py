"""Errors raised by the wire protocol.

Everything a peer can get wrong on the wire surfaces as a ProtocolError (or a subclass), so an
I/O loop needs exactly one `except` to survive garbage.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """The peer sent something this protocol does not allow."""


class FramingError(ProtocolError):
    """The byte stream cannot be split into frames any more; the connection must be dropped."""


class MalformedMessage(ProtocolError):
    """One frame was intact but its body is not a valid message.

    Frame boundaries are still known, so a tolerant reader may skip it and carry on.
    """


class FlowControlViolation(ProtocolError):
    """The peer sent more stream bytes than it was granted."""
