"""Remote files open for writing: a local copy the program writes, written back to the target.

Opening runs in the target at once (`fs.open_write`: O_CREAT, O_EXCL and O_TRUNC take effect
there, errors are the target's); the program then reads and writes a local copy natively. The
copy's data goes back to the target (whole, then truncated to the local size):

  - whenever a description of the copy that was open for writing is closed, however that
    happened (close, dup2 over it, exec with O_CLOEXEC, process exit) - inotify reports it;
  - on fsync/fdatasync of it (then also fsync'ed in the target);
  - before any other remote operation on the same path (stat, open, rename...);
  - when the session ends.

Only what changed travels back: the write-back sends the copy's data extents (SEEK_DATA /
SEEK_HOLE), not the whole file. A file opened write-only with O_APPEND (`>>`, Python's "a")
is not copied in at all: its copy is a sparse file of the remote size, with only the last
partial page filled in (the page an append starts in), so appending 3 lines to a 1 GiB file
moves those 3 lines and at most one page each way. Such a copy is filled in from the target
(`materialise`) before anything could make its holes matter: another open of the path that
may read it, or the program resizing it (ftruncate, fallocate).

While a writer is open, later opens of the same path share its copy, so the program sees its
own writes as it would on one file. Pending inotify events are read before each remote
operation, so everything the program did before a syscall is in the target before that
syscall runs.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import sys
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from mirrord_trace.agent_client import AgentClient, AgentLost, RemoteError
from mirrord_trace.fs.cache import LocalCache, apply_metadata
from mirrord_trace.fs.inotify import (
    IN_CLOSE_NOWRITE,
    IN_CLOSE_WRITE,
    IN_MODIFY,
    IN_OPEN,
    IN_Q_OVERFLOW,
    Inotify,
)
from mirrord_trace.fs.remote_files import READ_AHEAD, RemoteFiles, fill_copy
from mirrord_trace.protocol.requests import MAX_READ_SIZE

# The open(2) flags the agent applies in the target; the others only concern the local copy.
TARGET_OPEN_FLAGS = os.O_CREAT | os.O_EXCL | os.O_TRUNC | os.O_NOFOLLOW
_WATCHED = IN_OPEN | IN_MODIFY | IN_CLOSE_WRITE | IN_CLOSE_NOWRITE
# Holes and data extents of the copy are tracked by the kernel in pages.
_PAGE = mmap.PAGESIZE
# Added to a writer's open count when inotify dropped events: it then never drops to zero.
_UNCOUNTABLE = 1 << 40


@dataclass
class Writer:
    remote: str
    handle: int
    local: str
    reader_fd: int  # the supervisor's own descriptor of the copy (opened before the watch)
    wd: int
    synced: tuple[int, int]  # (size, ctime_ns) of the copy when it last matched the target
    opens: int = 0  # descriptions of the copy open in the program
    dirty: bool = False
    # Append-only copy: the target's bytes below `hole_end` are holes here, not copied in.
    hole_end: int = 0


def _state(fd: int) -> tuple[int, int]:
    info = os.fstat(fd)
    return info.st_size, info.st_ctime_ns


class Writers:
    def __init__(self, client: AgentClient, cache: LocalCache, files: RemoteFiles) -> None:
        self.client = client
        self.cache = cache
        self.files = files
        self._inotify: Inotify | None = None
        self._by_wd: dict[int, Writer] = {}
        self._by_remote: dict[str, Writer] = {}
        self._by_local: dict[str, Writer] = {}

    # -- opening --
    def shared_copy(self, remote: str, append_only: bool = False) -> str | None:
        """The copy of a path the program has open for writing, to share it (filled in first
        unless the new description can only append too). RemoteError."""
        writer = self._by_remote.get(remote)
        if writer is None:
            return None
        if not append_only:
            self.materialise(writer)
        return writer.local

    def open(self, remote: str, flags: int, mode: int) -> str:
        """Open `remote` for writing in the target; -> the local copy's path. RemoteError."""
        append_only = flags & os.O_ACCMODE == os.O_WRONLY and bool(flags & os.O_APPEND)
        reply = self.client.request(
            "fs.open_write",
            path=remote,
            flags=flags & TARGET_OPEN_FLAGS,
            mode=mode,
            content=not append_only,
        )
        handle: int = reply["handle"]
        local, fd = self.cache.new_file(remote)
        hole_end = 0
        try:
            if append_only:
                hole_end = _sparse_copy(self.client, fd, handle, reply["stat"]["size"])
            else:
                fill_copy(self.client, fd, reply, close_handle=False)
            apply_metadata(fd, reply["stat"])
            reader_fd = os.open(local, os.O_RDONLY | os.O_CLOEXEC)
        except BaseException:
            self.cache.forget(local)
            with contextlib.suppress(RemoteError):
                self.client.request_async("fs.close", handle=handle)
            raise
        finally:
            os.close(fd)
        if self._inotify is None:
            self._inotify = Inotify()
        wd = self._inotify.watch(local, _WATCHED)
        writer = Writer(remote, handle, local, reader_fd, wd, _state(reader_fd), hole_end=hole_end)
        self._by_wd[wd] = writer
        self._by_remote[remote] = writer
        self._by_local[local] = writer
        self.files.forget(remote)  # a read copy would be stale from the first write on
        return local

    # -- keeping the target up to date --
    def poll(self) -> None:
        """Act on what the program did to the copies since the last call."""
        if not self._by_wd or self._inotify is None:
            return
        for wd, mask in self._inotify.events():
            if mask & IN_Q_OVERFLOW:
                self._lost_count()
                continue
            writer = self._by_wd.get(wd)
            if writer is None:
                continue
            if mask & IN_OPEN:
                writer.opens += 1
            elif mask & IN_MODIFY:
                writer.dirty = True
            elif mask & (IN_CLOSE_WRITE | IN_CLOSE_NOWRITE):
                writer.opens -= 1
                if mask & IN_CLOSE_WRITE:
                    self._write_back(writer)
                if writer.opens <= 0:
                    self._finish(writer)

    def _lost_count(self) -> None:
        """Events were dropped: no writer may be taken for closed any more; all of them are
        written back whenever a close or sync comes, and at the end of the session."""
        for writer in self._by_wd.values():
            writer.dirty = True
            writer.opens = max(writer.opens, 0) + _UNCOUNTABLE

    def sync_path(self, remote: str) -> None:
        """Before a remote operation on `remote`: the target must have the program's writes."""
        if not self._by_wd:
            return
        self.poll()
        writer = self._by_remote.get(remote)
        if writer is not None:
            self._write_back(writer)

    def materialise(self, writer: Writer) -> None:
        """Fill an append-only copy's holes with the target's bytes: from now on it is a
        whole copy (its write-backs then send whatever is data in it). RemoteError."""
        if not writer.hole_end:
            return
        for start, end in _holes(writer.reader_fd, writer.hole_end):
            fd = os.open(writer.local, os.O_WRONLY | os.O_CLOEXEC)
            try:
                _copy_range(self.client, fd, writer.handle, start, end)
            finally:
                os.close(fd)
        writer.hole_end = 0

    def before_resize(self, local: str) -> None:
        """ftruncate/fallocate of a copy: an append-only one must have no holes first (a
        shrunk, re-grown copy would make them indistinguishable from written zeros)."""
        writer = self._by_local.get(local)
        if writer is not None:
            self.materialise(writer)

    def remote_of(self, local: str) -> str | None:
        """The remote path (as renamed since) of a copy open for writing."""
        writer = self._by_local.get(local)
        return writer.remote if writer is not None else None

    def fsync(self, local: str) -> int | None:
        """fsync of a copy: write back and fsync in the target; -> 0 or -errno, None if `local`
        is not a copy of a remote file open for writing."""
        writer = self._by_local.get(local)
        if writer is None:
            return None
        self.poll()
        return self._write_back(writer, sync=True)

    def renamed(self, old: str, new: str) -> None:
        """The program renamed a remote path: writers below it now have new names."""
        for writer in list(self._by_remote.values()):
            if writer.remote == old or writer.remote.startswith(old.rstrip("/") + "/"):
                del self._by_remote[writer.remote]
                writer.remote = new + writer.remote[len(old) :]
                self._by_remote[writer.remote] = writer

    def close(self) -> None:
        """End of session: everything still open goes back to the target."""
        self.poll()
        for writer in list(self._by_wd.values()):
            self._write_back(writer)
            self._finish(writer)
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None

    # -- internals --
    def _write_back(self, writer: Writer, sync: bool = False) -> int:
        state = _state(writer.reader_fd)
        if not writer.dirty and state == writer.synced and not sync:
            return 0
        try:
            self._send(writer, state[0], sync)
        except RemoteError as error:
            if not isinstance(error, AgentLost):  # the loss itself was reported once already
                print(
                    f"mirrord-trace: warning: could not write {writer.remote} back to the "
                    f"target: {error}",
                    file=sys.stderr,
                    flush=True,
                )
            return -error.errno
        writer.dirty = False
        writer.synced = state
        return 0

    def _send(self, writer: Writer, size: int, sync: bool) -> None:
        """The copy's data extents below `size` to the target, then its size; the last chunk
        (which truncates, and fsyncs when asked) only once every other chunk has landed."""
        chunks = [
            (offset, min(MAX_READ_SIZE, end - offset))
            for start, end in _extents(writer.reader_fd, size)
            for offset in range(start, end, MAX_READ_SIZE)
        ]
        last_offset, last_length = chunks.pop() if chunks else (size, 0)
        pending: deque[Future[dict[str, Any]]] = deque()
        for offset, length in chunks:
            data = os.pread(writer.reader_fd, length, offset)
            pending.append(
                self.client.request_async(
                    "fs.pwrite", handle=writer.handle, offset=offset, data=data
                )
            )
            while len(pending) >= READ_AHEAD:
                pending.popleft().result()
        while pending:
            pending.popleft().result()
        data = os.pread(writer.reader_fd, last_length, last_offset) if last_length else b""
        self.client.request(
            "fs.pwrite", handle=writer.handle, offset=last_offset, data=data, size=size, sync=sync
        )

    def _finish(self, writer: Writer) -> None:
        self._by_wd.pop(writer.wd, None)
        if self._by_remote.get(writer.remote) is writer:
            del self._by_remote[writer.remote]
        self._by_local.pop(writer.local, None)
        if self._inotify is not None:
            self._inotify.unwatch(writer.wd)
        os.close(writer.reader_fd)
        self.cache.forget(writer.local)
        with contextlib.suppress(RemoteError):  # the agent is gone, and with it the handle
            self.client.request_async("fs.close", handle=writer.handle)


def _extents(fd: int, size: int) -> list[tuple[int, int]]:
    """The (start, end) ranges below `size` that hold data (not holes) in file `fd`."""
    found: list[tuple[int, int]] = []
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as error:
            if error.errno == errno.ENXIO:  # only a hole from here on
                break
            raise
        if start >= size:
            break
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        found.append((start, end))
        offset = end
    return found


def _holes(fd: int, size: int) -> list[tuple[int, int]]:
    """The (start, end) ranges below `size` that are holes in file `fd`."""
    holes: list[tuple[int, int]] = []
    offset = 0
    for start, end in _extents(fd, size):
        if start > offset:
            holes.append((offset, start))
        offset = end
    if offset < size:
        holes.append((offset, size))
    return holes


def _copy_range(client: AgentClient, fd: int, handle: int, start: int, end: int) -> None:
    """The target's bytes [start, end) of the file behind `handle` into `fd` at the same place."""
    offset = start
    while offset < end:
        data: bytes = client.request(
            "fs.read", handle=handle, offset=offset, size=min(MAX_READ_SIZE, end - offset)
        )["data"]
        if not data:
            break
        os.pwrite(fd, data, offset)
        offset += len(data)


def _sparse_copy(client: AgentClient, fd: int, handle: int, size: int) -> int:
    """Make `fd` a copy for appending to a remote file of `size` bytes: that size, all holes
    but the last partial page (appends land in it, so it must hold the target's bytes); ->
    where the holes end."""
    os.ftruncate(fd, size)
    page_start = size // _PAGE * _PAGE
    _copy_range(client, fd, handle, page_start, size)
    # The filesystem may keep data in larger units (huge pages) or know no holes at all: all
    # of an extent that the copied page made data must hold the target's bytes too.
    for start, end in _extents(fd, size):
        if start < page_start:
            _copy_range(client, fd, handle, start, min(end, page_start))
            page_start = min(page_start, start)
    return page_start
