"""The one byte-copy loop of both sides: the agent's HTTP-filtering proxy relays raw bytes with
it, the local side's mirror relay copies the agent's stream to the program with it.

Not part of the sans-I/O protocol proper: it lives here because this package is what the
agent and the local side both ship (the agent image copies only mirrord_trace/protocol).
It touches nothing but the asyncio streams it is given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio


async def copy_until_eof(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, read_size: int
) -> None:
    """Copy bytes until end of file, then half-close `writer`; a broken side aborts `writer`
    (its peer sees a reset, as it would from the end that broke)."""
    try:
        while data := await reader.read(read_size):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.transport.abort()
