"""Credit-based flow control for one direction of one stream.

The receiver starts by allowing STREAM_WINDOW bytes. It grants credit back only as the bytes
are consumed (written to the real socket), so at most STREAM_WINDOW bytes of a stream are ever
buffered at the receiver, and a slow reader on one stream never stalls the others.
"""

from __future__ import annotations

from mirrord_trace.protocol.errors import FlowControlViolation

# Sized by measurement (benchmarks: outgoing-throughput). Per-chunk work (a frame, a few
# Python calls on each side) is what limits a stream, so chunks are large; the window holds
# four of them so that the sender never idles while credit is on its way back. With 64 KiB
# chunks in a 256 KiB window a download through the agent ran at 0.3-0.6 x a one-hop Python
# relay; with these, at about 1 x. The price: a stream may hold up to 1 MiB per direction.
STREAM_WINDOW = 1024 * 1024
# Largest StreamData payload; any UDP datagram (at most 64 KiB) fits in one, so one datagram
# is one frame.
MAX_DATA_CHUNK = 256 * 1024


class SendCredit:
    """What the sending side may still send on one stream."""

    def __init__(self, initial: int = STREAM_WINDOW) -> None:
        self.available = initial

    def take(self, wanted: int) -> int:
        """Reserve up to `wanted` bytes of credit; returns how many may be sent now."""
        allowed = min(wanted, self.available)
        self.available -= allowed
        return allowed

    def grant(self, amount: int) -> None:
        if amount <= 0:
            raise FlowControlViolation(f"credit grants must be positive, got {amount}")
        self.available += amount
        if self.available > STREAM_WINDOW:
            raise FlowControlViolation(
                f"peer granted credit beyond the {STREAM_WINDOW}-byte stream window"
            )


class ReceiveWindow:
    """The receiving side's view: enforces the window and decides when to grant credit."""

    def __init__(self, window: int = STREAM_WINDOW) -> None:
        self.window = window
        self.peer_credit = window  # what the sender may still send
        self.buffered = 0  # received, not yet consumed
        self._ungranted = 0  # consumed, not yet granted back
        # Granting in batches keeps credit frames rare; half the window keeps the sender busy.
        self._grant_threshold = max(1, window // 2)

    def on_data(self, size: int) -> None:
        """Account for `size` bytes received; FlowControlViolation if they exceed the credit."""
        if size > self.peer_credit:
            raise FlowControlViolation(
                f"peer sent {size} bytes with only {self.peer_credit} bytes of credit"
            )
        self.peer_credit -= size
        self.buffered += size

    def on_consumed(self, size: int) -> int:
        """Account for `size` buffered bytes consumed; returns a credit to grant, or 0."""
        if size > self.buffered:
            raise ValueError(f"consumed {size} bytes but only {self.buffered} are buffered")
        self.buffered -= size
        self._ungranted += size
        if self._ungranted < self._grant_threshold:
            return 0
        grant, self._ungranted = self._ungranted, 0
        self.peer_credit += grant
        return grant
