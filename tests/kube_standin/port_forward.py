"""The port-forward subresource over WebSocket, subprotocol v4.channel.k8s.io, as the API
server relays it from the kubelet.

For each requested port i, channel 2i carries data and channel 2i+1 errors; every message is
one binary frame whose first byte is the channel. The server first sends each channel's port
number (two bytes, little-endian), then dials localhost:port inside the pod's network namespace.
A failed dial is reported on the error channel; the connection ends when either side ends.
Frames are encoded and decoded with websocket-client's ABNF (server frames are unmasked).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import socket
import struct
import threading
from collections.abc import Callable

from websocket import ABNF, frame_buffer

V4_CHANNEL = "v4.channel.k8s.io"
SUPPORTED_PROTOCOLS = (V4_CHANNEL,)
_WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_FRAME_DATA = 32 * 1024


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + _WEBSOCKET_GUID).encode()).digest()).decode()


def negotiate(offered: str | None) -> str | None:
    """The first protocol the client offers that the server supports (the client's order)."""
    for protocol in (p.strip() for p in (offered or "").split(",")):
        if protocol in SUPPORTED_PROTOCOLS:
            return protocol
    return None


def _frame(opcode: int, payload: bytes) -> bytes:
    return ABNF(1, 0, 0, 0, opcode, 0, payload).format()


class _ClientGone(Exception):
    pass


def serve_port_forward(
    conn: socket.socket,
    port: int,
    dial: Callable[[int], socket.socket],
    describe_failure: Callable[[int, OSError], str],
) -> None:
    """Run one port-forward on an upgraded connection until either side ends."""
    send_lock = threading.Lock()

    def send(opcode: int, payload: bytes) -> None:
        with send_lock:
            conn.sendall(_frame(opcode, payload))

    port_bytes = struct.pack("<H", port)
    send(ABNF.OPCODE_BINARY, b"\x00" + port_bytes)
    send(ABNF.OPCODE_BINARY, b"\x01" + port_bytes)
    try:
        upstream = dial(port)
    except OSError as error:
        send(ABNF.OPCODE_BINARY, b"\x01" + describe_failure(port, error).encode())
        send(ABNF.OPCODE_CLOSE, struct.pack("!H", 1000))
        return

    def from_pod() -> None:
        try:
            while data := upstream.recv(_MAX_FRAME_DATA):
                send(ABNF.OPCODE_BINARY, b"\x00" + data)
        except OSError:
            pass
        # The pod side ended: the kubelet closes the whole stream.
        try:
            send(ABNF.OPCODE_CLOSE, struct.pack("!H", 1000))
            conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    pump = threading.Thread(target=from_pod, name="standin-portforward", daemon=True)
    pump.start()

    def receive(size: int) -> bytes:
        data = conn.recv(size)
        if not data:
            raise _ClientGone
        return data

    frames = frame_buffer(receive, True)
    try:
        while True:
            frame = frames.recv_frame()
            if frame.opcode == ABNF.OPCODE_CLOSE:
                break
            if frame.opcode == ABNF.OPCODE_PING:
                send(ABNF.OPCODE_PONG, frame.data)
                continue
            if frame.opcode != ABNF.OPCODE_BINARY or not frame.data:
                continue
            if frame.data[0] == 0:
                upstream.sendall(frame.data[1:])
    except (_ClientGone, OSError):
        pass
    finally:
        # shutdown, not just close: it wakes the pump blocked in recv() and sends the FIN.
        with contextlib.suppress(OSError):
            upstream.shutdown(socket.SHUT_RDWR)
        pump.join(timeout=5)
        upstream.close()
