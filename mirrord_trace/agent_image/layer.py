"""One image layer: a directory tree written as a gzip-compressed tar, the same bytes for the
same tree (entries sorted, owners numeric, mtimes clamped, gzip header without a time).

The layer's two digests are computed as it is written: `digest` over the gzip bytes (what the
manifest and the registry name it by) and `diff_id` over the tar bytes (what the image config
lists, and what a runtime checks after unpacking).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

# Filled by the container runtime at start (a tmpfs /dev, procfs, sysfs): their contents in the
# build tree (debootstrap's device nodes) do not belong in an image.
RUNTIME_MOUNTS = frozenset({"dev", "proc", "sys"})


class _HashingWriter:
    """A write-only file that hashes (and counts) what passes through to `target`."""

    def __init__(self, target: BinaryIO) -> None:
        self.target = target
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        self.target.write(data)
        return len(data)

    def flush(self) -> None:
        self.target.flush()


@dataclass(frozen=True, slots=True)
class Layer:
    path: Path  # the gzip-compressed tar on disk
    digest: str  # "sha256:<hex>" of the compressed bytes
    size: int
    diff_id: str  # "sha256:<hex>" of the uncompressed tar


def tree_entries(root: Path, relative: str = "") -> Iterator[str]:
    """Every path the layer of `root` holds, in the order it is written: depth first,
    siblings by name. The contents of the runtime's own mounts are skipped."""
    with os.scandir(root / relative if relative else root) as entries:
        names = sorted(entry.name for entry in entries)
    for name in names:
        path = f"{relative}/{name}" if relative else name
        yield path
        full = root / path
        if full.is_dir() and not full.is_symlink() and path not in RUNTIME_MOUNTS:
            yield from tree_entries(root, path)


def _tar_info(archive: tarfile.TarFile, root: Path, relative: str, mtime: int) -> tarfile.TarInfo:
    info = archive.gettarinfo(str(root / relative), arcname=relative)
    info.mtime = min(int(info.mtime), mtime)
    info.uname = info.gname = ""
    return info


def write_layer(root: Path, output: Path, mtime: int) -> Layer:
    """Write the tree under `root` as a layer at `output`. Files newer than `mtime` get `mtime`
    (so a rebuild of the same tree gives the same bytes); older ones keep theirs, which the
    timestamp-checked .pyc files next to Debian's Python sources rely on. Sockets, FIFOs and
    device nodes are left out (a runtime makes /dev itself)."""
    with output.open("wb") as raw:
        compressed = _HashingWriter(raw)
        with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=0) as gz:  # type: ignore[arg-type]
            plain = _HashingWriter(gz)  # type: ignore[arg-type]
            with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as archive:  # type: ignore[call-overload]
                for relative in tree_entries(root):
                    full = root / relative
                    mode = full.lstat().st_mode
                    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
                        continue
                    info = _tar_info(archive, root, relative, mtime)
                    if info.isreg():
                        with full.open("rb") as data:
                            archive.addfile(info, data)
                    else:
                        archive.addfile(info)
    return Layer(
        path=output,
        digest=f"sha256:{compressed.sha256.hexdigest()}",
        size=compressed.size,
        diff_id=f"sha256:{plain.sha256.hexdigest()}",
    )
