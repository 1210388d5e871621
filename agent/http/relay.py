"""Raw byte relays between two asyncio stream pairs (pass-through, switched protocols)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

from mirrord_trace.protocol.byte_copy import copy_until_eof

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
# Opens a connection to one upstream; None when it cannot be had (the program's session ended).
Opener = Callable[[], Awaitable[Streams | None]]

READ_SIZE = 256 * 1024


async def pipe_both(a: Streams, b: Streams, a_first: bytes = b"", b_first: bytes = b"") -> None:
    """Relay raw bytes both ways until both directions end; `a_first` was read from a already
    (it goes to b first), `b_first` from b."""
    if a_first:
        b[1].write(a_first)
    if b_first:
        a[1].write(b_first)
    await asyncio.gather(
        copy_until_eof(a[0], b[1], READ_SIZE), copy_until_eof(b[0], a[1], READ_SIZE)
    )
    a[1].close()
    b[1].close()


async def open_or_none(opener: Opener) -> Streams | None:
    try:
        return await opener()
    except OSError:
        return None


async def loopback_pair() -> tuple[socket.socket, socket.socket]:
    """Two connected TCP sockets over this namespace's loopback (for a program connection
    handed over whole: the program must get a TCP socket, as its listener would give it)."""
    loop = asyncio.get_running_loop()
    with socket.create_server(("127.0.0.1", 0), backlog=1) as listener:
        listener.setblocking(False)
        near = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            near.setblocking(False)
            near.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            accepting = loop.create_task(loop.sock_accept(listener))
            await loop.sock_connect(near, listener.getsockname())
            far, _ = await accepting
        except BaseException:
            near.close()
            raise
    far.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return near, far
