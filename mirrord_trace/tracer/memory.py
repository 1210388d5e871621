"""Tracee memory through /proc/<pid>/mem: a few microseconds per access, unlike POKEDATA.

The file stays bound to the address space it was opened on, so an exec needs a new one; the
tracer creates one AddressSpace per mm and drops it at exec.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
PATH_MAX = 4096


class TraceeMemoryError(OSError):
    """The tracee's memory could not be read or written (a bad pointer: the program gets EFAULT)."""


class TraceeMemory:
    __slots__ = ("_fd", "pid")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._fd = -1

    def _open(self) -> int:
        # Opened lazily: most address spaces never need their memory read.
        self._fd = os.open(f"/proc/{self.pid}/mem", os.O_RDWR | os.O_CLOEXEC)
        return self._fd

    def read(self, address: int, size: int) -> bytes:
        fd = self._fd if self._fd >= 0 else self._open()
        try:
            data = os.pread(fd, size, address)
        except OSError as exc:
            raise TraceeMemoryError(exc.errno, f"read {size} bytes at {address:#x}") from exc
        if len(data) != size:
            raise TraceeMemoryError(14, f"short read at {address:#x}")
        return data

    def read_cstring(self, address: int, limit: int = PATH_MAX) -> bytes:
        """A NUL-terminated string, read page by page so it never reads past a mapping's end."""
        if address == 0:
            raise TraceeMemoryError(14, "NULL string pointer")
        fd = self._fd if self._fd >= 0 else self._open()
        if address % PAGE_SIZE <= PAGE_SIZE - 256:  # the common case: a short path, one pread
            try:
                head = os.pread(fd, 256, address)
            except OSError as exc:
                raise TraceeMemoryError(exc.errno, f"read string at {address:#x}") from exc
            end = head.find(b"\0")
            if end >= 0:
                return head[:end]
        chunks: list[bytes] = []
        total = 0
        want = min(256, PAGE_SIZE - (address % PAGE_SIZE))  # most paths are short
        while total < limit:
            try:
                chunk = os.pread(fd, want, address)
            except OSError as exc:
                raise TraceeMemoryError(exc.errno, f"read string at {address:#x}") from exc
            if not chunk:
                raise TraceeMemoryError(14, f"unmapped string at {address:#x}")
            end = chunk.find(b"\0")
            if end >= 0:
                chunks.append(chunk[:end])
                return b"".join(chunks)
            chunks.append(chunk)
            total += len(chunk)
            address += len(chunk)
            want = PAGE_SIZE - (address % PAGE_SIZE)
        raise TraceeMemoryError(36, "string longer than PATH_MAX")  # ENAMETOOLONG

    def write(self, address: int, data: bytes) -> None:
        fd = self._fd if self._fd >= 0 else self._open()
        try:
            written = os.pwrite(fd, data, address)
        except OSError as exc:
            raise TraceeMemoryError(exc.errno, f"write {len(data)} bytes at {address:#x}") from exc
        if written != len(data):
            raise TraceeMemoryError(14, f"short write at {address:#x}")

    def write_all(self, writes: Iterable[tuple[int, bytes]]) -> None:
        """An Emulate's (address, bytes) writes, in order."""
        for address, data in writes:
            self.write(address, data)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class _ReopeningMemory(TraceeMemory):
    """/proc/<pid>/mem of a process that may exec unseen (no ptrace event says so): an access
    that fails reopens the file once and tries again, since after an exec the old file still
    points at the old, empty address space."""

    __slots__ = ()

    def read(self, address: int, size: int) -> bytes:
        try:
            return TraceeMemory.read(self, address, size)
        except TraceeMemoryError:
            self.close()
            return TraceeMemory.read(self, address, size)

    def read_cstring(self, address: int, limit: int = PATH_MAX) -> bytes:
        try:
            return TraceeMemory.read_cstring(self, address, limit)
        except TraceeMemoryError:
            self.close()
            return TraceeMemory.read_cstring(self, address, limit)

    def write(self, address: int, data: bytes) -> None:
        try:
            TraceeMemory.write(self, address, data)
        except TraceeMemoryError:
            self.close()
            TraceeMemory.write(self, address, data)


class ProcessMemories:
    """One memory file per process for the notification engine, which has no task table: an
    open and a close per call would cost more than the call's answer. At most `limit` stay
    open (a shell script's short-lived processes must not pile up descriptors)."""

    def __init__(self, limit: int = 64) -> None:
        self._open: dict[int, TraceeMemory] = {}
        self._limit = limit

    def of(self, tgid: int, tid: int) -> TraceeMemory:
        memory = self._open.get(tgid)
        if memory is None:
            if len(self._open) >= self._limit:
                self._open.pop(next(iter(self._open))).close()  # the oldest
            # Through the calling thread: it is alive while it waits; the file keeps working
            # for the other threads (one address space) after that thread has gone.
            memory = self._open[tgid] = _ReopeningMemory(tid)
        return memory

    def close(self) -> None:
        for memory in self._open.values():
            memory.close()
        self._open.clear()
