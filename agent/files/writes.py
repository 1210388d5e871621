"""The fs.* requests that change the target's files (feature.fs.mode write, or read_write paths).

Like the read side, every path is resolved inside the target's root with openat2
RESOLVE_IN_ROOT. Operations on a name (mkdir, unlink, rename) resolve the parent directory
that way and then act on the last component relative to that directory fd, so a symlink or
`..` in the path can never make them act outside the root.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from agent.files.reads import FileHandles, first_content, stat_dict
from agent.target.root import TargetRoot

_libc = ctypes.CDLL(None, use_errno=True)
_libc.renameat2.argtypes = (
    ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint
)  # fmt: skip

# open(2) flags of the program's call that the agent applies itself; access mode and the rest
# are the agent's choice (it always needs to read the file back, and never blocks).
_LOOKUP_FLAGS = os.O_NOFOLLOW
_BASE_FLAGS = os.O_RDWR | os.O_NONBLOCK | os.O_NOCTTY


def _split(path: str) -> tuple[str, str]:
    """(parent directory, last component); trailing slashes belong to the last component."""
    trimmed = path.rstrip("/")
    if not trimmed:
        return "/", "."
    parent, _, name = trimmed.rpartition("/")
    return parent or "/", name


@contextmanager
def _parent(root: TargetRoot, path: str) -> Iterator[tuple[int, str]]:
    """The parent directory of `path` (resolved in the root) as an fd, and the last name."""
    parent, name = _split(path)
    with root.opened(parent, os.O_PATH | os.O_DIRECTORY) as fd:
        yield fd, name


def open_write(
    root: TargetRoot,
    handles: FileHandles,
    path: str,
    flags: int,
    mode: int,
    content: bool = True,
) -> dict[str, Any]:
    """Open (maybe create) a regular file for the program to read and write through a copy;
    without `content` the reply carries none (a program that only appends needs none)."""
    base = _BASE_FLAGS | (flags & _LOOKUP_FLAGS)
    truncate = flags & os.O_TRUNC
    created = False
    if flags & os.O_CREAT:
        try:
            fd = root.open(path, base | os.O_CREAT | os.O_EXCL, mode=mode & 0o7777)
            created = True
        except FileExistsError:
            if flags & os.O_EXCL:
                raise
            fd = root.open(path, base | truncate)
    else:
        fd = root.open(path, base | truncate)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.ENXIO, "only regular files can be opened for writing", path)
        if created:
            # The agent's umask must not change what the program asked for (it applied its own).
            os.fchmod(fd, mode & 0o7777)
            info = os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise
    reply: dict[str, Any] = {"stat": stat_dict(info), "created": created}
    if content:
        reply.update(first_content(handles, fd, keep_open=True))
    else:
        reply.update({"content": b"", "handle": handles.add(fd)})
    return reply


def pwrite(
    handles: FileHandles, handle: int, offset: int, data: bytes, size: int, sync: bool
) -> dict[str, Any]:
    fd = handles.fd(handle)
    view = memoryview(data)
    written = 0
    while written < len(view):
        written += os.pwrite(fd, view[written:], offset + written)
    if size >= 0:
        os.ftruncate(fd, size)
    if sync:
        os.fsync(fd)
    return {"written": written}


def _chmod_exact(root: TargetRoot, path: str, mode: int) -> None:
    with root.opened(path, os.O_PATH | os.O_NOFOLLOW) as fd:
        os.chmod(f"/proc/self/fd/{fd}", mode & 0o7777)


def mkdir(root: TargetRoot, path: str, mode: int) -> dict[str, Any]:
    with _parent(root, path) as (parent_fd, name):
        if name in (".", ".."):
            raise OSError(errno.EEXIST, "File exists", path)
        os.mkdir(name, mode & 0o7777, dir_fd=parent_fd)
    _chmod_exact(root, path, mode)
    return {}


def unlink(root: TargetRoot, path: str, directory: bool) -> dict[str, Any]:
    with _parent(root, path) as (parent_fd, name):
        if name in (".", ".."):
            raise OSError(errno.EINVAL if directory else errno.EISDIR, "not removable", path)
        if directory:
            os.rmdir(name, dir_fd=parent_fd)
            return {}
        if path.endswith("/") and not _is_directory(parent_fd, name):
            raise OSError(errno.ENOTDIR, "Not a directory", path)
        os.unlink(name, dir_fd=parent_fd)
    return {}


def _is_directory(parent_fd: int, name: str) -> bool:
    return stat.S_ISDIR(os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode)


def rename(root: TargetRoot, old: str, new: str, flags: int) -> dict[str, Any]:
    with _parent(root, old) as (old_fd, old_name), _parent(root, new) as (new_fd, new_name):
        if old_name in (".", "..") or new_name in (".", ".."):
            raise OSError(errno.EBUSY, "cannot rename . or ..", old)
        result = _libc.renameat2(
            old_fd, os.fsencode(old_name), new_fd, os.fsencode(new_name), flags
        )
        if result != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), old)
    return {}


def truncate(root: TargetRoot, path: str, length: int) -> dict[str, Any]:
    if length < 0:
        raise OSError(errno.EINVAL, "negative length", path)
    with root.opened(path, os.O_PATH) as path_fd:
        info = os.fstat(path_fd)
        if stat.S_ISDIR(info.st_mode):
            raise OSError(errno.EISDIR, "Is a directory", path)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        fd = os.open(f"/proc/self/fd/{path_fd}", os.O_WRONLY | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        os.ftruncate(fd, length)
    finally:
        os.close(fd)
    return {}


@contextmanager
def _inode(root: TargetRoot, path: str, follow: bool) -> Iterator[str]:
    """A path naming exactly the inode `path` resolves to in the root (a /proc magic link)."""
    with root.opened(path, os.O_PATH | (0 if follow else os.O_NOFOLLOW)) as fd:
        yield f"/proc/self/fd/{fd}"


def chmod(root: TargetRoot, path: str, mode: int, follow: bool) -> dict[str, Any]:
    with _inode(root, path, follow) as inode:
        if not follow and os.path.islink(inode):
            raise OSError(errno.EOPNOTSUPP, "symbolic links have no mode of their own", path)
        os.chmod(inode, mode & 0o7777)
    return {}


def chown(root: TargetRoot, path: str, uid: int, gid: int, follow: bool) -> dict[str, Any]:
    with _inode(root, path, follow) as inode:
        # Following the magic link lands on the inode itself (a symlink, with follow=False),
        # never on what a symlink points to.
        os.chown(inode, uid, gid)
    return {}


class _Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))


_libc.utimensat.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(_Timespec), ctypes.c_int)
_AT_FDCWD = -100


def utimens(root: TargetRoot, path: str, times: list[list[int]], follow: bool) -> dict[str, Any]:
    """utimensat(2) with the program's own timespecs (UTIME_NOW/UTIME_OMIT included); no
    times means now."""
    pair = (_Timespec * 2)(*(_Timespec(sec, nsec) for sec, nsec in times)) if times else None
    with _inode(root, path, follow) as inode:
        # Following the magic link lands on the inode itself, as for chown.
        result = _libc.utimensat(_AT_FDCWD, os.fsencode(inode), pair, 0)
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), path)
    return {}


def symlink(root: TargetRoot, target: str, path: str) -> dict[str, Any]:
    with _parent(root, path) as (parent_fd, name):
        os.symlink(target, name, dir_fd=parent_fd)
    return {}


def link(root: TargetRoot, old: str, new: str, follow: bool) -> dict[str, Any]:
    """linkat(2). `old` is resolved inside the root first (following its last symlink when
    `follow`) and linked through the agent's /proc magic link for that fd: linkat's own
    AT_SYMLINK_FOLLOW would resolve an absolute symlink from the agent's root, outside the
    target's (issue #20: `ln -L` of a link to a host file hard-linked the host file)."""
    with _parent(root, new) as (new_fd, new_name):
        if new_name in (".", ".."):
            raise OSError(errno.EEXIST, "File exists", new)
        with root.opened(old, os.O_PATH | (0 if follow else os.O_NOFOLLOW)) as old_fd:
            # Following the magic link lands on the inode the fd holds (the symlink itself
            # when not following), never on anything resolved again.
            os.link(f"/proc/self/fd/{old_fd}", new_name, dst_dir_fd=new_fd, follow_symlinks=True)
    return {}
