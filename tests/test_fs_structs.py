"""The emulated `struct stat` and `struct statx` are byte for byte what the kernel writes.

Each case asks the kernel itself (raw newfstatat/statx syscalls into a buffer) about a real
file, directory, symlink or device, and packs the same file's os.stat() the way the agent
reports it.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import pytest

from agent.files.reads import stat_dict
from mirrord_trace.fs.stat_struct import STAT_SIZE, STATX_SIZE, pack_stat, pack_statx
from mirrord_trace.syscall_table import AT_FDCWD, SYSCALL_NUMBERS

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
AT_SYMLINK_NOFOLLOW = 0x100
STATX_BASIC_STATS = 0x7FF


def kernel_stat(path: str, follow: bool) -> bytes:
    buffer = ctypes.create_string_buffer(STAT_SIZE)
    flags = 0 if follow else AT_SYMLINK_NOFOLLOW
    result = _libc.syscall(
        SYSCALL_NUMBERS["newfstatat"], AT_FDCWD, os.fsencode(path), buffer, flags
    )
    assert result == 0, os.strerror(ctypes.get_errno())
    return buffer.raw


def kernel_statx(path: str) -> bytes:
    buffer = ctypes.create_string_buffer(STATX_SIZE)
    result = _libc.syscall(
        SYSCALL_NUMBERS["statx"], AT_FDCWD, os.fsencode(path), 0, STATX_BASIC_STATS, buffer
    )
    assert result == 0, os.strerror(ctypes.get_errno())
    return buffer.raw


@pytest.fixture
def samples(tmp_path: Path) -> list[tuple[str, bool]]:
    regular = tmp_path / "file"
    regular.write_bytes(os.urandom(12345))
    os.chmod(regular, 0o4751)
    os.utime(regular, ns=(1_600_000_000_123_456_789, 1_700_000_000_987_654_321))
    link = tmp_path / "link"
    link.symlink_to("file")
    return [
        (str(regular), True),
        (str(tmp_path), True),
        (str(link), False),
        (str(link), True),
        ("/dev/null", True),
    ]


def test_stat_matches_the_kernels(samples: list[tuple[str, bool]]) -> None:
    for path, follow in samples:
        packed = pack_stat(stat_dict(os.stat(path, follow_symlinks=follow)))
        assert len(packed) == STAT_SIZE
        assert packed == kernel_stat(path, follow), path


def test_statx_matches_the_kernels_basic_fields(samples: list[tuple[str, bool]]) -> None:
    for path, follow in samples:
        if not follow:
            continue
        packed = pack_statx(stat_dict(os.stat(path)))
        kernel = kernel_statx(path)
        assert len(packed) == STATX_SIZE
        # blksize .. blocks (the kernel's mask may add bits, stx_attributes may be set)
        assert packed[4:8] == kernel[4:8], path
        assert packed[16:56] == kernel[16:56], path
        assert packed[0x40:0x50] == kernel[0x40:0x50], path  # atime
        assert packed[0x60:0x80] == kernel[0x60:0x80], path  # ctime, mtime
        assert packed[0x80:0x90] == kernel[0x80:0x90], path  # rdev, dev (major/minor)
        mask = int.from_bytes(packed[:4], "little")
        assert mask == STATX_BASIC_STATS  # no birth time claimed
