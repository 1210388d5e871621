"""Extended attributes and filesystem statistics of the target's files (fs.*xattr, fs.statfs).

Each path is resolved inside the target's root (TargetRoot, like every fs request) to an O_PATH
fd; the attribute calls then go through that fd's /proc/self/fd magic link, which names exactly
the inode already resolved, so the path is never looked up again. A symlink itself (follow:
false on a symlink) has no attributes a program can use here: reads answer as a filesystem
without them would (ENODATA, an empty list), changes are refused with EPERM as the kernel
refuses user.* attributes on symlinks.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from agent.target.root import TargetRoot

_libc = ctypes.CDLL(None, use_errno=True)


class _Statfs(ctypes.Structure):
    # struct statfs (x86_64, asm-generic/statfs.h with 64-bit longs)
    _fields_ = (
        ("f_type", ctypes.c_long),
        ("f_bsize", ctypes.c_long),
        ("f_blocks", ctypes.c_uint64),
        ("f_bfree", ctypes.c_uint64),
        ("f_bavail", ctypes.c_uint64),
        ("f_files", ctypes.c_uint64),
        ("f_ffree", ctypes.c_uint64),
        ("f_fsid", ctypes.c_int * 2),
        ("f_namelen", ctypes.c_long),
        ("f_frsize", ctypes.c_long),
        ("f_flags", ctypes.c_long),
        ("f_spare", ctypes.c_long * 4),
    )


_libc.fstatfs.argtypes = (ctypes.c_int, ctypes.POINTER(_Statfs))


@contextmanager
def _inode(root: TargetRoot, path: str, follow: bool) -> Iterator[str | None]:
    """A path naming exactly the inode `path` resolves to in the root; None for a symlink."""
    with root.opened(path, os.O_PATH | (0 if follow else os.O_NOFOLLOW)) as fd:
        if stat.S_ISLNK(os.fstat(fd).st_mode):
            yield None
        else:
            yield f"/proc/self/fd/{fd}"


def getxattr(root: TargetRoot, path: str, name: bytes, follow: bool) -> dict[str, Any]:
    with _inode(root, path, follow) as inode:
        if inode is None:
            raise OSError(errno.ENODATA, "no such attribute on a symbolic link", path)
        return {"value": os.getxattr(inode, name)}


def listxattr(root: TargetRoot, path: str, follow: bool) -> dict[str, Any]:
    with _inode(root, path, follow) as inode:
        names = [] if inode is None else os.listxattr(inode)
        return {"names": [os.fsencode(name) for name in names]}


def setxattr(
    root: TargetRoot, path: str, name: bytes, value: bytes, flags: int, follow: bool
) -> dict[str, Any]:
    with _inode(root, path, follow) as inode:
        if inode is None:
            raise OSError(errno.EPERM, "attributes of a symbolic link cannot be set", path)
        os.setxattr(inode, name, value, flags)
    return {}


def removexattr(root: TargetRoot, path: str, name: bytes, follow: bool) -> dict[str, Any]:
    with _inode(root, path, follow) as inode:
        if inode is None:
            raise OSError(errno.ENODATA, "no such attribute on a symbolic link", path)
        os.removexattr(inode, name)
    return {}


def statfs(root: TargetRoot, path: str) -> dict[str, Any]:
    """The filesystem `path` is on, as statfs(2) describes it (fstatfs works on O_PATH fds)."""
    with root.opened(path, os.O_PATH) as fd:
        info = _Statfs()
        if _libc.fstatfs(fd, ctypes.byref(info)) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), path)
    return {
        "statfs": {
            "type": info.f_type,
            "bsize": info.f_bsize,
            "blocks": info.f_blocks,
            "bfree": info.f_bfree,
            "bavail": info.f_bavail,
            "files": info.f_files,
            "ffree": info.f_ffree,
            "fsid": [info.f_fsid[0], info.f_fsid[1]],
            "namelen": info.f_namelen,
            "frsize": info.f_frsize,
            "flags": info.f_flags,
        }
    }
