"""Writes the pod's root filesystem directory from a SandboxInfo."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from mirrord_trace.sandbox.info import SandboxInfo
from mirrord_trace.sandbox.pod_content import BUSYBOX_APPLETS, EXECUTABLES

BUSYBOX = Path("/bin/busybox")

# Character devices programs expect; the pod gets nodes of its own rather than a /dev mount,
# so there is no mount to clean up.
_DEVICES = {"null": (1, 3), "zero": (1, 5), "random": (1, 8), "urandom": (1, 9)}
_EMPTY_DIRS = {"proc": 0o555, "tmp": 0o1777, "root": 0o700, "var/log": 0o755}


def build_rootfs(info: SandboxInfo, large_file_data: bytes) -> None:
    root = info.root
    root.mkdir(mode=0o755, parents=True)
    for relative, mode in _EMPTY_DIRS.items():
        directory = root / relative
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(mode)  # mkdir's mode is filtered by the umask; 1777 must be exact
    _install_busybox(root)
    _make_devices(root / "dev")
    for pod_path, content in info.files.items():
        mode = 0o755 if pod_path in EXECUTABLES else 0o644
        _write(info.pod_path(pod_path), content.encode(), mode)
    _write(info.pod_path(info.large_file), large_file_data, 0o644)
    for pod_path, link_text in info.symlinks.items():
        info.pod_path(pod_path).symlink_to(link_text)


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)


def _install_busybox(root: Path) -> None:
    bin_dir = root / "bin"
    bin_dir.mkdir()
    shutil.copy2(BUSYBOX, bin_dir / "busybox")
    for applet in BUSYBOX_APPLETS:
        (bin_dir / applet).symlink_to("busybox")


def _make_devices(dev: Path) -> None:
    dev.mkdir()
    for node, (major, minor) in _DEVICES.items():
        os.mknod(dev / node, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        (dev / node).chmod(0o666)
