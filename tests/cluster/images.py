"""The cluster's own images, pause and CoreDNS: each a static binary packed as an OCI archive
(no outside registry is reachable) and imported into containerd's k8s.io namespace."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.cluster import layout, oci_archive

# image -> (binary, its path in the image, arguments)
IMAGES = {
    layout.PAUSE_IMAGE: (layout.PAUSE, "/pause", []),
    layout.COREDNS_IMAGE: (layout.COREDNS, "/coredns", []),
}


def archive_path(image: str) -> Path:
    return layout.IMAGES / (image.rsplit("/", 1)[-1].replace(":", "-") + ".tar")


def build_archive(image: str) -> Path:
    """The archive of `image`, rebuilt when its binary is newer."""
    binary, inside, args = IMAGES[image]
    out = archive_path(image)
    if out.exists() and out.stat().st_mtime >= binary.stat().st_mtime:
        return out
    with tempfile.TemporaryDirectory() as rootfs:
        target = Path(rootfs) / inside.lstrip("/")
        shutil.copy2(binary, target)
        target.chmod(0o755)
        oci_archive.build(Path(rootfs), out, image, [inside, *args])
    return out


def ctr(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ctr", "--address", str(layout.CONTAINERD_SOCK), "-n", "k8s.io", *args],
        check=True,
        capture_output=True,
        text=True,
        **kwargs,
    )


def import_archive(archive: Path) -> None:
    ctr("images", "import", str(archive))


def present() -> set[str]:
    return set(ctr("images", "ls", "-q").stdout.split())


def import_all() -> None:
    have = present()
    for image in IMAGES:
        if image not in have:
            import_archive(build_archive(image))
