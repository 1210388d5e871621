"""Reading remote files and directories: one agent round trip, then a local copy.

`fs.open_read` brings metadata and, up to the inline limit, the content (or a directory's
listing) in one reply. Larger files follow in large chunks with several requests in flight.
A copy is kept per remote path and reused while the remote version (dev, ino, size, mtime,
ctime) is unchanged: the agent then answers with the metadata only.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from mirrord_trace.agent_client import AgentClient, RemoteError
from mirrord_trace.fs.agent_descriptors import AgentDescriptors
from mirrord_trace.fs.cache import LocalCache, apply_metadata
from mirrord_trace.protocol.requests import (
    INLINE_READ_LIMIT,
    LISTING_LIMIT,
    MAX_READ_SIZE,
    stat_version,
)

# open(2) flags that change how the agent looks the path up (the rest concern the local copy).
LOOKUP_FLAGS = os.O_NOFOLLOW | os.O_DIRECTORY
# Chunk requests kept in flight while a large file streams in.
READ_AHEAD = 4


@dataclass(frozen=True)
class StandIn:
    """What the program opens instead of a remote path; `release` (if any) runs once that
    open has happened (it drops the supervisor's reference to a shared descriptor)."""

    path: str
    release: Callable[[], None] | None = None


@dataclass
class Copy:
    """The local stand-in of one remote path at one version."""

    local: str
    version: list[int]
    is_directory: bool
    listed: bool = True


def write_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


class RemoteFiles:
    def __init__(self, client: AgentClient, cache: LocalCache) -> None:
        self.client = client
        self.cache = cache
        self.descriptors = AgentDescriptors(client.session_info.get("agent_pid"))
        self._copies: dict[str, Copy] = {}
        # The remote metadata of every stand-in handed out (old versions included: a program
        # may still hold them open), by local path: what fstat of the stand-in answers.
        self._stat_of: dict[str, Mapping[str, int]] = {}

    @property
    def stand_ins(self) -> int:
        """How many stand-ins this session has handed out."""
        return len(self._stat_of)

    def stat_of_stand_in(self, local: str) -> Mapping[str, int] | None:
        """The remote file's metadata for a descriptor's target, if it is a stand-in."""
        return self._stat_of.get(local.removesuffix(" (deleted)"))

    def open_for_read(self, path: str, flags: int, list_entries: bool = True) -> StandIn:
        """What stands for remote `path` locally; raises RemoteError."""
        known = self._copies.get(path)
        send_known = known is not None and (known.listed or not list_entries)
        reply = self.client.request(
            "fs.open_read",
            path=path,
            flags=flags & LOOKUP_FLAGS,
            list=list_entries,
            known=known.version if send_known and known is not None else [],
            share=self.descriptors.enabled,
        )
        st = reply["stat"]
        if reply.get("unchanged") and known is not None:
            return StandIn(known.local)
        if stat.S_ISREG(st["mode"]):
            if "fd" in reply:
                shared = self._shared(path, reply)
                if shared is not None:
                    return shared
            local = self._copy_file(path, reply)
            return StandIn(self._keep(path, Copy(local, stat_version(st), False), st))
        if stat.S_ISDIR(st["mode"]):
            entries = reply.get("entries", [])
            if reply.get("more"):
                entries = entries + self._rest_of_listing(path, len(entries))
            local = self.cache.new_skeleton(path, st, entries)
            copy = Copy(local, stat_version(st), True, listed=list_entries)
            return StandIn(self._keep(path, copy, st))
        raise RemoteError(errno.ENXIO, f"{path}: only regular files and directories open remotely")

    def _shared(self, path: str, reply: Mapping[str, Any]) -> StandIn | None:
        fd = self.descriptors.take(reply["fd"], reply["stat"])
        if fd is None:
            return None
        self.client.request_async("fs.close", handle=reply["handle"])  # ours is a duplicate
        self.forget(path)
        return StandIn(f"/proc/{os.getpid()}/fd/{fd}", lambda: os.close(fd))

    def close(self) -> None:
        self.descriptors.close()
        self._stat_of.clear()

    def forget(self, path: str) -> None:
        """Drop the copy of `path` (it was renamed, removed or written through a writer)."""
        old = self._copies.pop(path, None)
        if old is not None and not old.is_directory:
            self.cache.forget(old.local)

    def _keep(self, path: str, copy: Copy, st: Mapping[str, int]) -> str:
        self._stat_of[copy.local] = st
        old = self._copies.get(path)
        # An old file copy may still be open in the program; unlinking keeps that open file
        # intact. Old skeletons stay: a program's cwd or dirfd may be one, and must map back.
        if old is not None and not old.is_directory:
            self.cache.forget(old.local)
        self._copies[path] = copy
        return copy.local

    def _copy_file(self, path: str, reply: Mapping[str, Any]) -> str:
        local, fd = self.cache.new_file(path, large=reply["stat"]["size"] > INLINE_READ_LIMIT)
        try:
            fill_copy(self.client, fd, reply)
            apply_metadata(fd, reply["stat"])
        except BaseException:
            os.close(fd)
            self.cache.forget(local)
            raise
        os.close(fd)
        return local

    def _rest_of_listing(self, path: str, offset: int) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        more = True
        while more:
            reply = self.client.request(
                "fs.listdir", path=path, offset=offset + len(entries), limit=LISTING_LIMIT
            )
            entries.extend(e for e in reply["entries"] if e["name"] not in (".", ".."))
            more = reply["more"]
        return entries


def fill_copy(
    client: AgentClient, fd: int, reply: Mapping[str, Any], close_handle: bool = True
) -> int:
    """Write the inline content, then stream the rest through the reply's handle; -> size."""
    content: bytes = reply["content"]
    write_all(fd, content, 0)
    handle = reply.get("handle")
    size = len(content)
    if handle is None:
        return size
    try:
        if size == INLINE_READ_LIMIT or size < reply["stat"]["size"]:  # more follows
            size = _stream_rest(client, fd, handle, size, reply["stat"]["size"])
    finally:
        if close_handle:
            with contextlib.suppress(RemoteError):  # nothing waits for the answer
                client.request_async("fs.close", handle=handle)
    return size


def _stream_rest(client: AgentClient, fd: int, handle: int, offset: int, expected: int) -> int:
    """Chunks from `offset` until a short one, READ_AHEAD requests in flight; -> total size."""
    pending: deque[tuple[int, Future[dict[str, Any]]]] = deque()
    next_offset = offset
    end_seen = False

    def ask() -> None:
        nonlocal next_offset
        pending.append(
            (next_offset, client.request_async(
                "fs.read", handle=handle, offset=next_offset, size=MAX_READ_SIZE
            ))
        )
        next_offset += MAX_READ_SIZE

    while len(pending) < READ_AHEAD and (next_offset < expected or not pending):
        ask()
    size = offset
    while pending:
        chunk_offset, future = pending.popleft()
        data: bytes = future.result()["data"]
        if data:
            write_all(fd, data, chunk_offset)
            size = max(size, chunk_offset + len(data))
        if len(data) < MAX_READ_SIZE:
            end_seen = True  # the file ends here (it may have shrunk since the stat)
        elif not end_seen and not pending:
            ask()  # the file grew since the stat: keep going
        if not end_seen:
            while len(pending) < READ_AHEAD and next_offset < expected:
                ask()
    os.ftruncate(fd, size)
    return size
