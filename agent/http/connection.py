"""One stolen connection on a filtered port: which protocol it speaks, and the I/O around the
sans-I/O routers.

The first bytes tell: the HTTP/2 connection preface (h2c with prior knowledge, how gRPC talks)
goes to agent.http.h2_router; a TLS ClientHello, or anything that is not HTTP, passes to the
target untouched (the agent cannot read HTTPS: it is never filtered, never stolen); the rest is
HTTP/1.x (agent.http.h1), which may switch to HTTP/2 by `Upgrade: h2c`. A client that sends
nothing for HTTP_DETECTION_TIMEOUT seconds (MIRRORD_TRACE_HTTP_DETECTION_TIMEOUT, default 2,
mirrord's) is passed to the target too: a protocol whose server speaks first still works.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re

from agent.http.body import collect_timeout
from agent.http.filter import Filter
from agent.http.h1 import FilteredConnection, H2cUpgrade
from agent.http.h2_router import CLIENT, H2Router
from agent.http.relay import READ_SIZE, Opener, Streams, open_or_none, pipe_both
from agent.http.routes import TARGET, Routes

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# An HTTP/1.x request line starts with a method token and a space.
_HTTP1_START = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32} ")
_TOKEN_SO_FAR = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}")


def _detection_timeout() -> float:
    raw = os.environ.get("MIRRORD_TRACE_HTTP_DETECTION_TIMEOUT", "")
    try:
        return float(raw) if raw else 2.0
    except ValueError:
        return 2.0


HTTP_DETECTION_TIMEOUT = _detection_timeout()


async def serve_filtered(
    client: Streams, http_filter: Filter, open_program: Opener, open_target: Opener
) -> list[str]:
    """Serve one stolen connection of a port with one subscriber; where its requests went."""
    return await serve_routed(client, Routes.single(http_filter, open_program, open_target))


async def serve_routed(client: Streams, routes: Routes) -> list[str]:
    """Serve one stolen connection; the side each request went to, in order."""
    first = await _sniff(client[0])
    if first.startswith(H2_PREFACE):
        router = H2Router(routes)
        router.start()
        await H2Driver(router, client, routes).run(first)
        return router.routed
    if not _HTTP1_START.match(first):
        await _pass_to_target(client, routes.openers[TARGET], first)
        return []
    connection = FilteredConnection(client, routes, first)
    upgrade = await connection.serve()
    if upgrade is None:
        return connection.routed
    return connection.routed + await _serve_upgraded(client, routes, upgrade)


async def _serve_upgraded(client: Streams, routes: Routes, up: H2cUpgrade) -> list[str]:
    router = H2Router(routes)
    router.start_upgraded(up.settings, up.headers, up.body)
    await H2Driver(router, client, routes).run(up.rest)
    return router.routed


async def _sniff(reader: asyncio.StreamReader) -> bytes:
    """The first bytes: enough to tell HTTP/2's preface, an HTTP/1.x request line and the
    rest apart (b"" when the client sent nothing in time, or closed)."""
    data = b""
    try:
        async with asyncio.timeout(HTTP_DETECTION_TIMEOUT):
            while not data or _undecided(data):
                more = await reader.read(READ_SIZE)
                if not more:
                    break
                data += more
    except TimeoutError:
        pass
    return data


def _undecided(data: bytes) -> bool:
    """A prefix of the HTTP/2 preface, or of a request line's method, and nothing more yet."""
    if len(data) < len(H2_PREFACE) and H2_PREFACE.startswith(data):
        return True
    return _TOKEN_SO_FAR.fullmatch(data) is not None


async def _pass_to_target(client: Streams, open_target: Opener, first: bytes) -> None:
    target = await open_or_none(open_target)
    if target is None:
        client[1].transport.abort()
        return
    await pipe_both(client, target, a_first=first)


class H2Driver:
    """Moves bytes between the sockets and an H2Router until the client's connection ends."""

    def __init__(self, router: H2Router, client: Streams, routes: Routes) -> None:
        self.router = router
        self.client = client
        self.openers = routes.openers
        self.writers = {CLIENT: client[1]}
        self.tasks: set[asyncio.Task[None]] = set()
        self.timers: list[asyncio.TimerHandle] = []

    async def run(self, first: bytes) -> None:
        router, reader = self.router, self.client[0]
        try:
            if first:
                router.receive(CLIENT, first)
            self.flush()
            while not router.done:
                data = await reader.read(READ_SIZE)
                if not data:
                    break
                router.receive(CLIENT, data)
                self.flush()
                await self.client[1].drain()
        except (ConnectionError, OSError):
            pass
        finally:
            for timer in self.timers:
                timer.cancel()
            for task in self.tasks:
                task.cancel()
            for writer in self.writers.values():
                writer.close()

    def flush(self) -> None:
        router = self.router
        if router.new_collections:
            loop = asyncio.get_running_loop()
            now = loop.time()
            self.timers = [timer for timer in self.timers if timer.when() > now]
            for stream_id in router.new_collections:
                self.timers.append(
                    loop.call_later(collect_timeout(), self._give_up_collecting, stream_id)
                )
            router.new_collections.clear()
        for endpoint, writer in list(self.writers.items()):
            data = router.data_to_send(endpoint)
            if data:
                writer.write(data)
        for side in router.wanted():
            router.connecting_to(side)
            self._spawn(self._connect(side))

    def _give_up_collecting(self, stream_id: int) -> None:
        self.router.give_up_collecting(stream_id)
        with contextlib.suppress(ConnectionError, OSError):
            self.flush()

    def _spawn(self, work: object) -> None:
        task = asyncio.get_running_loop().create_task(work)  # type: ignore[arg-type]
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _connect(self, side: str) -> None:
        streams = await open_or_none(self.openers[side])
        if streams is None:
            self.router.unavailable(side)
            self.flush()
            return
        self.writers[side] = streams[1]
        self.router.connected(side)
        conn = self.router.conns[side]
        self.flush()
        self._spawn(self._pump(side, streams, conn))

    async def _pump(self, side: str, streams: Streams, conn: object) -> None:
        """Feed one upstream connection's bytes to the router until it ends (or the router
        dropped it after a GOAWAY and a new one took its place)."""
        reader, writer = streams
        try:
            while self.router.conns.get(side) is conn:
                data = await reader.read(READ_SIZE)
                if not data:
                    break
                self.router.receive(side, data)
                self.flush()
        except (ConnectionError, OSError):
            pass
        finally:
            if self.router.conns.get(side) is conn:
                self.router.closed(side)
            if self.writers.get(side) is writer:
                del self.writers[side]
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                self.flush()
