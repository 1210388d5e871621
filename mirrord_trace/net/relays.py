"""The loopback relays the program's sockets are connected to.

TCP: one listener per address family on the loopback interface. The supervisor connects the
program's own socket (borrowed with pidfd_getfd) to it and accepts the other end at once; that
end is what gets pumped through the agent stream, so the program's socket stays a real TCP
socket (options, epoll, shutdown all behave) and its bytes take one hop through the supervisor.

UDP: a relay socket per flow, bound on loopback and connected to the program's socket, so
that each program socket (and, for unconnected sockets, each destination) gets the replies
that belong to it.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from mirrord_trace.net.sockaddr import InetAddress, from_socket_tuple

LOOPBACK = {socket.AF_INET: "127.0.0.1", socket.AF_INET6: "::1"}
ACCEPT_TIMEOUT = 5.0
_BACKLOG = 512


class RelayError(OSError):
    """The program's socket could not be joined to its relay."""


def loopback_socket(family: int, kind: int) -> socket.socket:
    """A socket bound to a free port on the loopback address of `family`."""
    sock = socket.socket(family, kind)
    try:
        sock.bind((LOOPBACK[family], 0))
    except OSError:
        sock.close()
        raise
    return sock


class TcpRelay:
    """Joins program sockets to relay ends through loopback listeners (one per family)."""

    def __init__(self) -> None:
        self._listeners: dict[int, socket.socket] = {}
        self._lock = threading.Lock()

    def _listener(self, family: int) -> socket.socket:
        listener = self._listeners.get(family)
        if listener is None:
            listener = loopback_socket(family, socket.SOCK_STREAM)
            listener.listen(_BACKLOG)
            listener.settimeout(ACCEPT_TIMEOUT)
            self._listeners[family] = listener
        return listener

    def join(self, program: socket.socket) -> socket.socket:
        """Connect the program's socket to a relay listener; returns the relay's end.

        The program's socket keeps its own blocking mode: a non-blocking one is left with
        its handshake done or about to be, which is what a program polling for EINPROGRESS
        expects to find.
        """
        with self._lock:
            listener = self._listener(program.family)
            # Non-blocking: the handshake completes on loopback at once; accept waits for it.
            with contextlib.suppress(BlockingIOError):
                program.connect(listener.getsockname())
            mine = program.getsockname()
            while True:
                try:
                    relay_end, peer = listener.accept()
                except OSError as error:
                    raise RelayError(error.errno, f"the relay accepted nothing: {error}") from None
                if peer[:2] == mine[:2]:
                    break
                relay_end.close()  # somebody else's connection to our port: not ours to serve
        relay_end.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return relay_end

    def close(self) -> None:
        with self._lock:
            for listener in self._listeners.values():
                listener.close()
            self._listeners.clear()


def unix_relay_end(program: socket.socket) -> socket.socket:
    """Connect the program's Unix stream socket to a fresh listener in the abstract namespace
    (nothing on disk; seen only in this network namespace) and return the accepted end."""
    import secrets

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        name = b"\0mirrord-trace-unix-" + secrets.token_hex(8).encode()
        listener.bind(name)
        listener.listen(1)
        listener.settimeout(ACCEPT_TIMEOUT)
        # A listener with room in its backlog takes a connect at once, also a non-blocking one.
        with contextlib.suppress(BlockingIOError):
            program.connect(name)
        try:
            end, _ = listener.accept()
        except OSError as error:
            raise RelayError(error.errno, f"the relay accepted nothing: {error}") from None
    return end


def udp_relay_for(program: socket.socket) -> socket.socket:
    """A UDP relay socket connected to the program's socket, which must be bound already."""
    relay = loopback_socket(program.family, socket.SOCK_DGRAM)
    try:
        relay.connect(program_address_seen_from_loopback(program))
    except OSError:
        relay.close()
        raise
    return relay


def program_address_seen_from_loopback(program: socket.socket) -> tuple[str, int]:
    """Where datagrams for the program's socket go: its address, loopback if it is a wildcard."""
    host, port = program.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        host = LOOPBACK[program.family]
    return (host, port)


def bind_if_unbound(program: socket.socket) -> None:
    """What the kernel's autobind does on a first send: a free port on the wildcard address."""
    if program.getsockname()[1] == 0:
        program.bind(("0.0.0.0" if program.family == socket.AF_INET else "::", 0))


def address_of(sock: socket.socket) -> InetAddress:
    return from_socket_tuple(sock.getsockname(), sock.family)
