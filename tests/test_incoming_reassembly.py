"""TCP reassembly of mirrored connections: whatever order, duplication or overlap the capture
saw, the program receives exactly the bytes the client sent, once, in order."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.incoming.reassembly import ReassemblyError, TcpReassembler

SEQ_SPACE = 1 << 32


@st.composite
def captured_streams(draw: st.DrawFn) -> tuple[int, bytes, list[tuple[int, bytes, bool]]]:
    """(initial sequence number, the stream, the segments as captured: shuffled, repeated,
    overlapping, the last one carrying the FIN)."""
    isn = draw(st.integers(0, SEQ_SPACE - 1))  # includes streams that wrap around 2**32
    data = draw(st.binary(min_size=0, max_size=3000))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(data) - 1)), max_size=12)))
    bounds = [0, *[c for c in cuts if c < len(data)], len(data)]
    segments = list(itertools.pairwise(bounds))
    # Retransmissions, including ones that straddle segment boundaries (overlaps).
    extra = draw(
        st.lists(st.tuples(st.integers(0, len(data)), st.integers(0, 400)), max_size=8)
    )
    segments += [(start, min(len(data), start + length)) for start, length in extra]
    order = draw(st.permutations(range(len(segments))))
    captured = []
    for index in order:
        start, end = segments[index]
        fin = end == len(data) and index == len(bounds) - 2
        captured.append(((isn + 1 + start) % SEQ_SPACE, data[start:end], fin))
    if not any(fin for *_, fin in captured):
        captured.append(((isn + 1 + len(data)) % SEQ_SPACE, b"", True))
    return isn, data, captured


@given(captured_streams())
def test_any_capture_order_yields_the_original_stream(
    case: tuple[int, bytes, list[tuple[int, bytes, bool]]],
) -> None:
    isn, data, captured = case
    stream = TcpReassembler(isn)
    out = b"".join(stream.segment(seq, payload, fin=fin) for seq, payload, fin in captured)
    assert out == data
    assert stream.finished and not stream.has_gap


@given(st.integers(0, SEQ_SPACE - 1), st.binary(min_size=1, max_size=500))
def test_nothing_is_delivered_past_a_gap_until_it_fills(isn: int, data: bytes) -> None:
    stream = TcpReassembler(isn)
    later = data[1:]
    assert stream.segment((isn + 2) % SEQ_SPACE, later) == b""
    assert stream.has_gap or not later
    assert stream.segment((isn + 1) % SEQ_SPACE, data[:1]) == data


def test_reset_ends_the_stream_and_later_segments_are_ignored() -> None:
    stream = TcpReassembler(1000)
    assert stream.segment(1001, b"abc") == b"abc"
    assert stream.segment(1004, b"", rst=True) == b""
    assert stream.finished and stream.reset
    assert stream.segment(1004, b"def") == b""


def test_data_after_the_fin_is_not_part_of_the_stream() -> None:
    stream = TcpReassembler(5)
    assert stream.segment(6, b"ab", fin=True) == b"ab"
    assert stream.finished
    assert stream.segment(8, b"zz") == b""


def test_a_gap_that_never_fills_is_reported_once_too_much_waits() -> None:
    stream = TcpReassembler(0, max_pending=1000)
    stream.segment(1 + 10, bytes(600))
    with pytest.raises(ReassemblyError, match="packets were lost"):
        stream.segment(1 + 700, bytes(600))
