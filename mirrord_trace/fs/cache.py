"""The session's local copies of remote files and directories, under one private directory.

A remote file the program opens is materialised here (its content, mode, owner and times) and
the program's path argument is rewritten to the copy: reads, seeks, mmap and fstat then run
natively at local speed. A remote directory becomes a skeleton here: its entries with their
types (regular files empty, symlinks pointing nowhere) so that getdents64 runs natively, and a
chdir into it is a chdir into the skeleton. Paths that lead into the cache (a dirfd, the cwd)
map back to the remote paths they stand for.

Layout: /run/mirrord-trace/fs/<supervisor pid>-<n>/{f,d,w}/<number>; removed when the session
ends, and by the next session if this one was killed.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mirrord_trace.protocol.requests import DT_BLK, DT_CHR, DT_DIR, DT_FIFO, DT_LNK, DT_SOCK

CACHE_BASE = Path("/run/mirrord-trace/fs")
# Where a skeleton's symlinks point: they exist for their type only and are never followed
# (every path through a skeleton is mapped back to the remote path before the kernel sees it).
SKELETON_LINK_TARGET = ".mirrord-trace-remote-symlink"
_session_numbers = itertools.count(1)
# Traversable by a program that dropped privileges; listing the cache is for the owner only.
_DIRECTORY_MODE = 0o711


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_abandoned(base: Path = CACHE_BASE) -> list[str]:
    """Remove the caches of sessions whose supervisor is gone (killed before cleaning up)."""
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in base.iterdir():
            owner = entry.name.partition("-")[0]
            if owner.isdigit() and not _pid_alive(int(owner)):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry.name)
    return removed


def apply_metadata(target: int | str, st: Mapping[str, int]) -> None:
    """Give a local copy the remote file's owner, permission bits and times."""
    with contextlib.suppress(PermissionError):  # only root can give files away
        os.chown(target, st["uid"], st["gid"])  # before chmod: chown clears set-id bits
    os.chmod(target, st["mode"] & 0o7777)
    os.utime(target, ns=(st["atime_ns"], st["mtime_ns"]))


class LocalCache:
    def __init__(self, base: Path = CACHE_BASE) -> None:
        self.base = base
        self.root: Path | None = None
        self._prefix = ""
        self._numbers = itertools.count(1)
        # local path of a copy or skeleton -> the remote path it stands for
        self._remote_of: dict[str, str] = {}

    # -- lifetime --
    def _ensure(self) -> Path:
        if self.root is None:
            self.base.mkdir(parents=True, exist_ok=True)
            remove_abandoned(self.base)
            root = self.base / f"{os.getpid()}-{next(_session_numbers)}"
            root.mkdir(mode=_DIRECTORY_MODE)
            for kind in ("f", "d", "w"):
                (root / kind).mkdir(mode=_DIRECTORY_MODE)
            self.root = root
            self._prefix = f"{root}/"
        return self.root

    def close(self) -> None:
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
            self._prefix = ""
            self._remote_of.clear()

    # -- mapping --
    def remote_path_of(self, local: str) -> str | None:
        """The remote path a local path inside the cache stands for; None outside the cache."""
        if not self._prefix or not local.startswith(self._prefix):
            return None
        # A skeleton's own path, or a path below it (never created by us, but a program may
        # build one from a dirfd it got): map the longest known prefix.
        head, rest = local, ""
        while head.startswith(self._prefix):
            remote = self._remote_of.get(head)
            if remote is not None:
                return os.path.join(remote, rest) if rest else remote
            head, _, tail = head.rpartition("/")
            rest = os.path.join(tail, rest) if rest else tail
        return None

    def forget(self, local: str) -> None:
        self._remote_of.pop(local, None)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(local)

    # -- copies of files --
    def new_file(self, remote: str, kind: str = "f") -> tuple[str, int]:
        """A new empty local copy for `remote`: (path, fd open for writing)."""
        path = str(self._ensure() / kind / str(next(self._numbers)))
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self._remote_of[path] = remote
        return path, fd

    # -- skeletons of directories --
    def new_skeleton(
        self, remote: str, st: Mapping[str, int], entries: Iterable[Mapping[str, Any]]
    ) -> str:
        path = str(self._ensure() / "d" / str(next(self._numbers)))
        os.mkdir(path, 0o700)
        self._remote_of[path] = remote
        dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            add_skeleton_entries(dir_fd, entries)
        finally:
            os.close(dir_fd)
        apply_metadata(path, st)
        return path


def add_skeleton_entries(dir_fd: int, entries: Iterable[Mapping[str, Any]]) -> None:
    for entry in entries:
        name = entry["name"]
        if name in (".", "..") or "/" in name or "\0" in name or not name:
            continue
        try:
            _make_entry(dir_fd, name, entry["type"])
        except FileExistsError:
            continue  # a name listed twice (the directory changed between pages)


def _make_entry(dir_fd: int, name: str, dtype: int) -> None:
    if dtype == DT_DIR:
        os.mkdir(name, 0o700, dir_fd=dir_fd)
    elif dtype == DT_LNK:
        os.symlink(SKELETON_LINK_TARGET, name, dir_fd=dir_fd)
    elif dtype == DT_FIFO:
        os.mkfifo(name, 0o600, dir_fd=dir_fd)
    elif dtype in (DT_CHR, DT_BLK, DT_SOCK):
        kind = {DT_CHR: stat.S_IFCHR, DT_BLK: stat.S_IFBLK, DT_SOCK: stat.S_IFSOCK}[dtype]
        try:
            # Device 0:0 opens nothing (ENXIO); the node is there for its type only.
            os.mknod(name, kind | 0o600, os.makedev(0, 0), dir_fd=dir_fd)
        except PermissionError:
            _make_file(dir_fd, name)
    else:
        _make_file(dir_fd, name)


def _make_file(dir_fd: int, name: str) -> None:
    os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600,
                     dir_fd=dir_fd))
