"""The fs.* requests: blocking file operations inside the target's root.

They run in the agent's thread pool. Every path goes through TargetRoot (openat2 with
RESOLVE_IN_ROOT); the work is then done on the resulting fd, never on a path again, so nothing
can be swapped in between the check and the use.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from agent.target.process import Credentials
from agent.target.root import TargetRoot
from mirrord_trace.protocol.requests import (
    DT_BLK,
    DT_CHR,
    DT_DIR,
    DT_FIFO,
    DT_LNK,
    DT_REG,
    DT_SOCK,
    DT_UNKNOWN,
    INLINE_READ_LIMIT,
    LISTING_LIMIT,
    MAX_READ_SIZE,
    stat_version,
)

# open(2) flags a reader may pass that change how the path is looked up.
_LOOKUP_FLAGS = os.O_NOFOLLOW | os.O_DIRECTORY
_MODE_TO_DTYPE = {
    stat.S_IFIFO: DT_FIFO,
    stat.S_IFCHR: DT_CHR,
    stat.S_IFDIR: DT_DIR,
    stat.S_IFBLK: DT_BLK,
    stat.S_IFREG: DT_REG,
    stat.S_IFLNK: DT_LNK,
    stat.S_IFSOCK: DT_SOCK,
}


def stat_dict(result: os.stat_result) -> dict[str, int]:
    return {
        "mode": result.st_mode,
        "size": result.st_size,
        "uid": result.st_uid,
        "gid": result.st_gid,
        "nlink": result.st_nlink,
        "ino": result.st_ino,
        "dev": result.st_dev,
        "rdev": result.st_rdev,
        "atime_ns": result.st_atime_ns,
        "mtime_ns": result.st_mtime_ns,
        "ctime_ns": result.st_ctime_ns,
        "blksize": result.st_blksize,
        "blocks": result.st_blocks,
    }


class FileHandles:
    """One session's open files, by handle; closed together when the session ends."""

    def __init__(self) -> None:
        self._fds: dict[int, int] = {}
        self._next = 1

    def add(self, fd: int) -> int:
        handle, self._next = self._next, self._next + 1
        self._fds[handle] = fd
        return handle

    def fd(self, handle: int) -> int:
        try:
            return self._fds[handle]
        except KeyError:
            raise OSError(errno.EBADF, f"no open file with handle {handle}") from None

    def close(self, handle: int) -> None:
        os.close(self.fd(handle))
        del self._fds[handle]

    def close_all(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def _read_up_to(fd: int, limit: int) -> bytes:
    """Up to `limit` bytes from the start, however short the reads (procfs files are)."""
    chunks: list[bytes] = []
    total = 0
    while total < limit:
        chunk = os.read(fd, limit - total)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def open_read(
    root: TargetRoot,
    handles: FileHandles,
    path: str,
    flags: int,
    list_entries: bool = False,
    known: list[int] | None = None,
    share: bool = False,
) -> dict[str, Any]:
    # O_PATH first: opening a FIFO or a device for reading could block or have side effects.
    with root.opened(path, os.O_PATH | (flags & _LOOKUP_FLAGS)) as path_fd:
        info = os.fstat(path_fd)
        if stat.S_ISLNK(info.st_mode):
            raise OSError(errno.ELOOP, "is a symbolic link and O_NOFOLLOW was given", path)
        reply: dict[str, Any] = {"stat": stat_dict(info)}
        if known and known == stat_version(reply["stat"]):
            reply["unchanged"] = True
            return reply
        if stat.S_ISDIR(info.st_mode) and list_entries:
            with _reopened(path_fd, os.O_RDONLY | os.O_DIRECTORY) as dir_fd:
                entries, more = _entries(dir_fd, 0, LISTING_LIMIT)
            reply["entries"] = entries
            reply["more"] = more
            return reply
        if not stat.S_ISREG(info.st_mode):
            return reply
        # Reopening through the agent's own /proc magic link gives a readable fd for exactly
        # the file already resolved inside the root.
        fd = os.open(f"/proc/self/fd/{path_fd}", os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
    if share and info.st_size > INLINE_READ_LIMIT:
        # A client on this machine takes the agent's descriptor itself (pidfd_getfd) rather
        # than have the content cross the connection; one elsewhere reads it through "handle".
        handle = handles.add(fd)
        reply.update({"content": b"", "handle": handle, "fd": fd})
        return reply
    reply.update(first_content(handles, fd))
    return reply


def first_content(handles: FileHandles, fd: int, keep_open: bool = False) -> dict[str, Any]:
    """The first INLINE_READ_LIMIT bytes, and a handle when there is more (or `keep_open`).

    Closes `fd` unless a handle now owns it.
    """
    try:
        # One byte past the limit tells whether more follows, without a second round trip.
        content = _read_up_to(fd, INLINE_READ_LIMIT + 1)
    except BaseException:
        os.close(fd)
        raise
    reply: dict[str, Any] = {"content": content[:INLINE_READ_LIMIT]}
    if len(content) > INLINE_READ_LIMIT or keep_open:
        reply["handle"] = handles.add(fd)
    else:
        os.close(fd)
    return reply


def read(
    handles: FileHandles, handle: int, offset: int, size: int, close_after: bool = False
) -> dict[str, Any]:
    data = os.pread(handles.fd(handle), min(size, MAX_READ_SIZE), offset)
    if close_after:
        handles.close(handle)
    return {"data": data}


def close(handles: FileHandles, handle: int) -> dict[str, Any]:
    handles.close(handle)
    return {}


def stat_path(root: TargetRoot, path: str, follow: bool) -> dict[str, Any]:
    with root.opened(path, os.O_PATH | (0 if follow else os.O_NOFOLLOW)) as fd:
        return {"stat": stat_dict(os.fstat(fd))}


def _permitted(info: os.stat_result, who: Credentials, mode: int) -> bool:
    """The kernel's permission rule for plain mode bits, as the target's user."""
    if who.uid == 0:
        # root may read and write anything; executing needs some execute bit (or a directory).
        if mode & os.X_OK:
            return stat.S_ISDIR(info.st_mode) or bool(info.st_mode & 0o111)
        return True
    if info.st_uid == who.uid:
        bits = (info.st_mode >> 6) & 0o7
    elif info.st_gid == who.gid or info.st_gid in who.groups:
        bits = (info.st_mode >> 3) & 0o7
    else:
        bits = info.st_mode & 0o7
    return bits & mode == mode


def access(
    root: TargetRoot, who: Credentials, path: str, mode: int, follow: bool = True
) -> dict[str, Any]:
    with root.opened(path, os.O_PATH | (0 if follow else os.O_NOFOLLOW)) as fd:
        if mode == os.F_OK:
            return {}
        info = os.fstat(fd)
        if not _permitted(info, who, mode & (os.R_OK | os.W_OK | os.X_OK)):
            raise OSError(errno.EACCES, "permission denied for the target's user", path)
        if mode & os.W_OK and os.fstatvfs(fd).f_flag & os.ST_RDONLY:
            raise OSError(errno.EROFS, "read-only file system", path)
    return {}


def readlink(root: TargetRoot, path: str) -> dict[str, Any]:
    with root.opened(path, os.O_PATH | os.O_NOFOLLOW) as fd:
        if not stat.S_ISLNK(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a symbolic link", path)
        return {"target": os.readlink("", dir_fd=fd)}


def _dtype(entry: os.DirEntry[str]) -> int:
    if entry.is_symlink():
        return DT_LNK
    if entry.is_dir(follow_symlinks=False):
        return DT_DIR
    if entry.is_file(follow_symlinks=False):
        return DT_REG
    try:
        return _MODE_TO_DTYPE.get(stat.S_IFMT(entry.stat(follow_symlinks=False).st_mode), 0)
    except FileNotFoundError:
        return DT_UNKNOWN


@contextmanager
def _reopened(path_fd: int, flags: int) -> Iterator[int]:
    """A real fd (not O_PATH) for the file an O_PATH fd already resolved inside the root."""
    fd = os.open(f"/proc/self/fd/{path_fd}", flags | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        yield fd
    finally:
        os.close(fd)


def _entries(dir_fd: int, offset: int, limit: int) -> tuple[list[dict[str, Any]], bool]:
    """Up to `limit` entries (0: all) after skipping `offset`, and whether more follow."""
    entries: list[dict[str, Any]] = []
    with os.scandir(dir_fd) as scan:
        for index, entry in enumerate(scan):
            if index < offset:
                continue
            if limit and len(entries) == limit:
                return entries, True
            entries.append({"name": entry.name, "type": _dtype(entry), "ino": entry.inode()})
    return entries, False


def listdir(root: TargetRoot, path: str, offset: int = 0, limit: int = 0) -> dict[str, Any]:
    with root.opened(path, os.O_RDONLY | os.O_DIRECTORY) as fd:
        entries: list[dict[str, Any]] = []
        if offset == 0:
            with root.opened(os.path.join(path, ".."), os.O_PATH) as parent_fd:
                parent_ino = os.fstat(parent_fd).st_ino
            entries = [
                {"name": ".", "type": DT_DIR, "ino": os.fstat(fd).st_ino},
                {"name": "..", "type": DT_DIR, "ino": parent_ino},
            ]
        more_entries, more = _entries(fd, offset, limit)
    return {"entries": entries + more_entries, "more": more}
