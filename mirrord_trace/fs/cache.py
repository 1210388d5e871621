"""The session's local copies of remote files and directories, under private directories.

A remote file the program opens is materialised here (its content, mode, owner and times) and
the program's path argument is rewritten to the copy: reads, seeks, mmap and fstat then run
natively at local speed. A remote directory becomes a skeleton here: its entries with their
types (regular files empty, symlinks pointing nowhere) so that getdents64 runs natively, and a
chdir into it is a chdir into the skeleton. Paths that lead into the cache (a dirfd, the cwd)
map back to the remote paths they stand for.

Small copies, skeletons and files open for writing live on tmpfs (/dev/shm), where creating a
file costs microseconds rather than a disk's journal; large copies (streamed from an agent on
another machine) go to /var/tmp so that they do not fill memory. Each session's directories
(mkdtemp, mode 0700: the copies keep the remote files' modes and owners for fstat, so the
directory is what keeps other local users out) are named after the supervisor's pid and removed
when the session ends, however it ends: a small reaper process (mirrord_trace/fs/reaper.py)
removes them when the supervisor is gone, even after SIGKILL.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mirrord_trace.fs.reaper import Reaper
from mirrord_trace.protocol.requests import DT_BLK, DT_CHR, DT_DIR, DT_FIFO, DT_LNK, DT_SOCK

FAST_BASES = (Path("/dev/shm"), Path("/run"), Path(tempfile.gettempdir()))
LARGE_BASES = (Path("/var/tmp"), Path(tempfile.gettempdir()))
SESSION_PREFIX = "mirrord-trace-fs-"
# Where a skeleton's symlinks point: they exist for their type only and are never followed
# (every path through a skeleton is mapped back to the remote path before the kernel sees it).
SKELETON_LINK_TARGET = ".mirrord-trace-remote-symlink"
# Private to the invoking user. A copy keeps the remote file's mode and owner (fstat runs on it
# natively), so a 0644 or a uid-1000 file would be readable by other local users if they could
# reach it: only the directory stands between them and the target's files.
_DIRECTORY_MODE = 0o700


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_abandoned(base: Path) -> list[str]:
    """Remove this user's session directories in `base` whose supervisor is gone."""
    removed = []
    with contextlib.suppress(OSError):
        for entry in base.iterdir():
            if not entry.name.startswith(SESSION_PREFIX):
                continue
            owner = entry.name[len(SESSION_PREFIX) :].partition("-")[0]
            with contextlib.suppress(OSError):
                if (
                    owner.isdigit()
                    and entry.lstat().st_uid == os.geteuid()
                    and not _pid_alive(int(owner))
                ):
                    shutil.rmtree(entry, ignore_errors=True)
                    removed.append(str(entry))
    return removed


def _session_directory(bases: Iterable[Path]) -> Path:
    """A new private directory in the first usable base."""
    failure: OSError | None = None
    for base in bases:
        try:
            remove_abandoned(base)
            path = Path(tempfile.mkdtemp(prefix=f"{SESSION_PREFIX}{os.getpid()}-", dir=base))
        except OSError as error:
            failure = failure or error
            continue
        path.chmod(_DIRECTORY_MODE)
        return path
    raise failure or OSError("no directory for the local copies of remote files")


def apply_metadata(target: int | str, st: Mapping[str, int]) -> None:
    """Give a local copy the remote file's owner, permission bits and times."""
    with contextlib.suppress(PermissionError):  # only root can give files away
        os.chown(target, st["uid"], st["gid"])  # before chmod: chown clears set-id bits
    os.chmod(target, st["mode"] & 0o7777)
    os.utime(target, ns=(st["atime_ns"], st["mtime_ns"]))


class LocalCache:
    def __init__(
        self, fast_bases: Iterable[Path] = FAST_BASES, large_bases: Iterable[Path] = LARGE_BASES
    ) -> None:
        self.fast_bases = tuple(fast_bases)
        self.large_bases = tuple(large_bases)
        self.roots: list[Path] = []
        self._fast: Path | None = None
        self._large: Path | None = None
        self._prefixes: tuple[str, ...] = ()
        self._numbers = itertools.count(1)
        self._reaper: Reaper | None = None
        # local path of a copy or skeleton -> the remote path it stands for
        self._remote_of: dict[str, str] = {}

    # -- lifetime --
    def _root(self, large: bool = False) -> Path:
        if large:
            if self._large is None:
                self._large = self._add_root(self.large_bases)
            return self._large
        if self._fast is None:
            self._fast = self._add_root(self.fast_bases)
        return self._fast

    def _add_root(self, bases: tuple[Path, ...]) -> Path:
        root = _session_directory(bases)
        self.roots.append(root)
        if self._reaper is None:
            self._reaper = Reaper()
        self._reaper.watch(root)
        self._prefixes = tuple(f"{r}/" for r in self.roots)
        return root

    def close(self) -> None:
        for root in self.roots:
            shutil.rmtree(root, ignore_errors=True)
        self.roots.clear()
        if self._reaper is not None:
            self._reaper.close()
            self._reaper = None
        self._fast = self._large = None
        self._prefixes = ()
        self._remote_of.clear()

    # -- mapping --
    def remote_path_of(self, local: str) -> str | None:
        """The remote path a local path inside the cache stands for; None outside the cache."""
        if not self._prefixes or not local.startswith(self._prefixes):
            return None
        # A skeleton's own path, or a path below it (never created by us, but a program may
        # build one from a dirfd it got): map the longest known prefix.
        head, rest = local, ""
        while head.startswith(self._prefixes):
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
    def new_file(self, remote: str, large: bool = False) -> tuple[str, int]:
        """A new empty local copy for `remote`: (path, fd open for reading and writing)."""
        path = f"{self._root(large)}/{next(self._numbers)}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self._remote_of[path] = remote
        return path, fd

    # -- skeletons of directories --
    def new_skeleton(
        self, remote: str, st: Mapping[str, int], entries: Iterable[Mapping[str, Any]]
    ) -> str:
        path = f"{self._root()}/{next(self._numbers)}"
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
