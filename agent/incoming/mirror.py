"""Mirroring: copies of the connections the target receives, sent to every subscribed session.

One packet capture serves every mirror subscription of the agent; its kernel filter lists the
subscribed ports. A connection is followed from its SYN (connections already open when the
subscription started are not copied: their first bytes are unknown). Each copy is a stream the
agent opens towards the client; the program's answers that come back on it are dropped, and the
target's own traffic is never touched.

A copy cannot push back on the real client, so a session that reads too slowly has its copy
reset once MIRROR_BACKLOG bytes wait for it, rather than holding the agent's memory hostage.
"""

from __future__ import annotations

import asyncio
import errno
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.incoming.capture import PacketCapture, Segment
from agent.incoming.reassembly import ReassemblyError, TcpReassembler
from agent.net.streams import ClientCredit, StreamOwner
from mirrord_trace.protocol import (
    MAX_DATA_CHUNK,
    SendCredit,
    StreamClose,
    StreamData,
    StreamReset,
)

MIRROR_BACKLOG = 32 * 1024 * 1024
# A connection that shows no packet for this long is forgotten (its FIN was never seen).
IDLE_CONNECTION_SECONDS = 600.0
_SWEEP_SECONDS = 30.0


class MirrorStream(ClientCredit):
    """One copy of one connection, agent -> client only, within the client's credit."""

    def __init__(self, stream_id: int, owner: StreamOwner) -> None:
        self.stream_id = stream_id
        self._owner = owner
        self._credit = SendCredit()
        self._backlog: list[bytes] = []
        self._backlog_size = 0
        self._closing = False
        self.finished = False

    # -- from the capture --
    def feed(self, data: bytes) -> None:
        if self.finished or self._closing or not data:
            return
        self._backlog.append(data)
        self._backlog_size += len(data)
        if self._backlog_size > MIRROR_BACKLOG:
            self._fail(errno.ENOBUFS, "the program read the mirrored copy too slowly")
            return
        self._flush()

    def end(self) -> None:
        """The client closed its side: the copy ends once the backlog is sent."""
        self._closing = True
        self._flush()

    def fail(self, code: int, message: str) -> None:
        self._fail(code, message)

    # -- from the session (messages of the client) --
    def on_data(self, data: bytes) -> None:
        pass  # the program's answers: a mirror throws them away (the target answered already)

    def _credit_granted(self) -> None:
        self._flush()

    def on_close(self) -> None:
        pass  # the program finished answering; the copy may still have bytes to deliver

    def abort(self) -> None:
        if not self.finished:
            self.finished = True
            self._backlog.clear()
            self._owner.stream_finished(self.stream_id)

    # -- internals --
    def _flush(self) -> None:
        while self._backlog and self._credit.available and not self.finished:
            chunk = self._backlog[0]
            size = self._credit.take(min(len(chunk), MAX_DATA_CHUNK))
            if size < len(chunk):
                self._backlog[0] = chunk[size:]
                chunk = chunk[:size]
            else:
                self._backlog.pop(0)
            self._backlog_size -= size
            self._owner.send(StreamData(self.stream_id, chunk))
        if self._closing and not self._backlog and not self.finished:
            self._owner.send(StreamClose(self.stream_id))
            self.abort()

    def _fail(self, code: int, message: str) -> None:
        if not self.finished:
            self._owner.send(StreamReset(self.stream_id, code, message))
            self.abort()


class CopyReceiver(Protocol):
    """A mirror subscription: opens one copy stream per connection (None: the session left)."""

    def open_copy(self, info: dict[str, Any]) -> MirrorStream | None: ...


@dataclass
class MirroredConnection:
    reassembler: TcpReassembler
    copies: list[MirrorStream]
    last_seen: float = field(default_factory=time.monotonic)

    def deliver(self, segment: Segment) -> None:
        self.last_seen = time.monotonic()
        try:
            data = self.reassembler.segment(
                segment.sequence,
                segment.payload,
                fin=bool(segment.flags & 0x01),
                rst=bool(segment.flags & 0x04),
            )
        except ReassemblyError as error:
            self.fail(errno.EIO, str(error))
            return
        for copy in self.copies:
            copy.feed(data)
        if self.reassembler.reset:
            self.fail(errno.ECONNRESET, "the client reset the connection")
        elif self.reassembler.finished:
            for copy in self.copies:
                copy.end()

    def fail(self, code: int, message: str) -> None:
        for copy in self.copies:
            copy.fail(code, message)

    @property
    def done(self) -> bool:
        return self.reassembler.finished or all(copy.finished for copy in self.copies)


class MirrorHub:
    """The agent's packet capture and the connections it is copying, for every subscriber."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self._log = log
        self._receivers: dict[int, list[CopyReceiver]] = {}
        self._connections: dict[tuple[str, int, str, int], MirroredConnection] = {}
        self._capture: PacketCapture | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._dropped = 0

    @property
    def ports(self) -> set[int]:
        return set(self._receivers)

    def add(self, port: int, receiver: CopyReceiver) -> None:
        if self._capture is None:
            self._start()
        self._receivers.setdefault(port, []).append(receiver)
        assert self._capture is not None
        self._capture.set_ports(self._receivers)

    def remove(self, port: int, receiver: CopyReceiver) -> None:
        receivers = self._receivers.get(port, [])
        if receiver in receivers:
            receivers.remove(receiver)
        if not receivers:
            self._receivers.pop(port, None)
        if not self._receivers:
            self.close()
        elif self._capture is not None:
            self._capture.set_ports(self._receivers)

    def close(self) -> None:
        if self._capture is not None:
            asyncio.get_running_loop().remove_reader(self._capture.fileno())
            self._capture.close()
            self._capture = None
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for connection in self._connections.values():
            for copy in connection.copies:
                copy.end()
        self._connections.clear()

    def _start(self) -> None:
        capture = PacketCapture()
        loop = asyncio.get_running_loop()
        loop.add_reader(capture.fileno(), self._on_readable)
        self._capture = capture
        self._sweeper = loop.call_later(_SWEEP_SECONDS, self._sweep)

    def _on_readable(self) -> None:
        capture = self._capture
        if capture is None:
            return
        for segment in capture.read_segments():
            self.on_segment(segment)

    def on_segment(self, segment: Segment) -> None:
        flow = segment.flow
        connection = self._connections.get(flow)
        if segment.opens:
            if connection is not None:
                if connection.reassembler.initial_sequence == segment.sequence:
                    return  # the SYN again
                connection.fail(errno.ECONNRESET, "the client reused the address for a new SYN")
            connection = self._open(segment)
            if connection is not None:
                self._connections[flow] = connection
            return
        if connection is None:
            return
        connection.deliver(segment)
        if connection.done:
            del self._connections[flow]

    def _open(self, syn: Segment) -> MirroredConnection | None:
        receivers = self._receivers.get(syn.destination_port)
        if not receivers:
            return None
        info = {
            "mode": "mirror",
            "port": syn.destination_port,
            "peer": [syn.source, syn.source_port],
            "local": [syn.destination, syn.destination_port],
        }
        copies = [copy for r in receivers if (copy := r.open_copy(info)) is not None]
        if not copies:
            return None
        return MirroredConnection(TcpReassembler(syn.sequence), copies)

    def _sweep(self) -> None:
        now = time.monotonic()
        for flow, connection in list(self._connections.items()):
            if connection.done or now - connection.last_seen > IDLE_CONNECTION_SECONDS:
                connection.fail(errno.ETIMEDOUT, "the mirrored connection went silent")
                del self._connections[flow]
        if self._capture is not None:
            dropped = self._capture.dropped()
            if dropped:
                self._dropped += dropped
                self._log(f"mirror: the kernel dropped {dropped} captured packets")
            self._sweeper = asyncio.get_running_loop().call_later(_SWEEP_SECONDS, self._sweep)
