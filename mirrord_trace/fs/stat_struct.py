"""The kernel's x86_64 `struct stat` and `struct statx`, packed from an agent's STAT map.

stat/lstat/newfstatat of a remote path are emulated: the supervisor writes one of these into
the program's buffer, exactly as the kernel would have.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping

# struct stat (arch/x86/include/uapi/asm/stat.h): dev, ino, nlink, mode, uid, gid, pad, rdev,
# size, blksize, blocks, then atime, mtime, ctime as (sec, nsec), then three unused longs.
_STAT = struct.Struct("<QQQIIIiQqqqqqqqqq3q")
STAT_SIZE = _STAT.size  # 144

# struct statx (include/uapi/linux/stat.h), 256 bytes.
_STATX_HEAD = struct.Struct("<IIQIIIHHQQQQ")
_STATX_TIME = struct.Struct("<qIi")
_STATX_DEVICES = struct.Struct("<IIII")
STATX_SIZE = 256

STATX_TYPE = 0x001
STATX_MODE = 0x002
STATX_NLINK = 0x004
STATX_UID = 0x008
STATX_GID = 0x010
STATX_ATIME = 0x020
STATX_MTIME = 0x040
STATX_CTIME = 0x080
STATX_INO = 0x100
STATX_SIZE_FIELD = 0x200
STATX_BLOCKS = 0x400
STATX_BASIC_STATS = 0x7FF

_NS = 1_000_000_000


def _split_ns(ns: int) -> tuple[int, int]:
    seconds, nanoseconds = divmod(ns, _NS)
    return seconds, nanoseconds


def pack_stat(st: Mapping[str, int]) -> bytes:
    return _STAT.pack(
        st["dev"],
        st["ino"],
        st["nlink"],
        st["mode"],
        st["uid"],
        st["gid"],
        0,
        st["rdev"],
        st["size"],
        st["blksize"],
        st["blocks"],
        *_split_ns(st["atime_ns"]),
        *_split_ns(st["mtime_ns"]),
        *_split_ns(st["ctime_ns"]),
        0,
        0,
        0,
    )


def pack_statx(st: Mapping[str, int]) -> bytes:
    """A statx result with the basic fields (no birth time, like many filesystems)."""
    head = _STATX_HEAD.pack(
        STATX_BASIC_STATS,
        st["blksize"],
        0,  # stx_attributes
        st["nlink"],
        st["uid"],
        st["gid"],
        st["mode"],
        0,
        st["ino"],
        st["size"],
        st["blocks"],
        0,  # stx_attributes_mask
    )
    times = b"".join(
        _STATX_TIME.pack(*_split_ns(ns), 0)
        for ns in (st["atime_ns"], 0, st["ctime_ns"], st["mtime_ns"])  # atime btime ctime mtime
    )
    devices = _STATX_DEVICES.pack(
        os.major(st["rdev"]), os.minor(st["rdev"]), os.major(st["dev"]), os.minor(st["dev"])
    )
    packed = head + times + devices
    return packed + bytes(STATX_SIZE - len(packed))
