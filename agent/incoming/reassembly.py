"""TCP stream reassembly for mirrored connections (sans-I/O: segments in, ordered bytes out).

A captured segment may be a retransmission, overlap what was already delivered, arrive before
the segments it follows, or carry the FIN or RST that ends the stream. The reassembler turns
whatever order the capture saw into the exact byte stream the client sent, once, in order.

Sequence numbers are 32-bit and wrap; positions here are 64-bit offsets from the first data
byte (the SYN's sequence number + 1), so wrapping only matters when a segment is placed.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

_SEQ_MODULO = 1 << 32
_HALF_SEQ_SPACE = 1 << 31
# Out-of-order bytes held while waiting for a gap to fill; a larger gap means the capture lost
# packets for good (a stream that can no longer be copied exactly).
DEFAULT_MAX_PENDING = 16 * 1024 * 1024


class ReassemblyError(Exception):
    """The stream cannot be reassembled exactly any more (too much out-of-order data)."""


@dataclass
class TcpReassembler:
    """One direction of one TCP connection, from its SYN's sequence number."""

    initial_sequence: int
    max_pending: int = DEFAULT_MAX_PENDING
    delivered: int = 0  # bytes handed out so far: the position the next byte must have
    fin_position: int | None = None
    reset: bool = False
    _pending_starts: list[int] = field(default_factory=list)  # sorted
    _pending: dict[int, bytes] = field(default_factory=dict)
    _pending_size: int = 0

    @property
    def finished(self) -> bool:
        """Every byte up to the FIN was delivered (or the stream was reset)."""
        return self.reset or (self.fin_position is not None and self.delivered >= self.fin_position)

    @property
    def has_gap(self) -> bool:
        return bool(self._pending) or (
            self.fin_position is not None and self.delivered < self.fin_position
        )

    def position_of(self, sequence: int) -> int:
        """The stream position of `sequence`, taken as the one nearest what was delivered."""
        next_sequence = (self.initial_sequence + 1 + self.delivered) % _SEQ_MODULO
        distance = (sequence - next_sequence) % _SEQ_MODULO
        if distance >= _HALF_SEQ_SPACE:
            distance -= _SEQ_MODULO  # behind: a retransmission of delivered bytes
        return self.delivered + distance

    def segment(
        self, sequence: int, payload: bytes, *, fin: bool = False, rst: bool = False
    ) -> bytes:
        """Take one captured segment; returns the bytes that are now in order (maybe none)."""
        if self.finished:
            return b""
        if rst:
            self.reset = True
            return b""
        start = self.position_of(sequence)
        if fin and self.fin_position is None:
            self.fin_position = start + len(payload)
        if payload:
            self._store(start, payload)
        return self._take_contiguous()

    def _store(self, start: int, payload: bytes) -> None:
        end = start + len(payload)
        if end <= self.delivered:
            return  # a plain retransmission
        if start < self.delivered:
            payload = payload[self.delivered - start :]
            start = self.delivered
        if self.fin_position is not None and end > self.fin_position:
            payload = payload[: max(0, self.fin_position - start)]
            if not payload:
                return
        known = self._pending.get(start)
        if known is not None and len(known) >= len(payload):
            return  # the same segment again
        if known is None:
            bisect.insort(self._pending_starts, start)
        else:
            self._pending_size -= len(known)
        self._pending[start] = payload
        self._pending_size += len(payload)
        if self._pending_size > self.max_pending:
            raise ReassemblyError(
                f"more than {self.max_pending} bytes wait behind a gap: packets were lost"
            )

    def _take_contiguous(self) -> bytes:
        pieces: list[bytes] = []
        while self._pending_starts and self._pending_starts[0] <= self.delivered:
            start = self._pending_starts.pop(0)
            payload = self._pending.pop(start)
            self._pending_size -= len(payload)
            skip = self.delivered - start
            if skip < len(payload):  # overlapping segments: only the new tail counts
                pieces.append(payload[skip:])
                self.delivered += len(payload) - skip
        return b"".join(pieces)
