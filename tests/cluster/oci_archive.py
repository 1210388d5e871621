"""A directory -> an OCI image archive (the OCI image layout, tarred), with no container daemon.

The archive holds one gzip layer made from the directory (owned by root, timestamps zeroed, so
the same input gives the same digests), the image config, the manifest and index.json. The
index names the image both ways containerd reads (`io.containerd.image.name`, the full
reference, and `org.opencontainers.image.ref.name`), so
`ctr -n k8s.io images import ARCHIVE` loads it under NAME, and skopeo
`oci-archive:ARCHIVE` can push it to a registry.

    python -m tests.cluster.oci_archive ROOTFS OUT.tar --name REF --entrypoint /bin/x [--env K=V]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def _layer(rootfs: Path) -> bytes:
    """The uncompressed layer tar: every entry under rootfs, in sorted order, owned by root."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(rootfs.rglob("*")):
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(rootfs)))
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = 0
            if info.isreg():
                with open(path, "rb") as data:
                    tar.addfile(info, data)
            else:
                tar.addfile(info)
    return buffer.getvalue()


def _descriptor(media_type: str, blob: bytes) -> dict:
    return {"mediaType": media_type, "digest": _digest(blob), "size": len(blob)}


def _digest(blob: bytes) -> str:
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def build(
    rootfs: Path,
    out: Path,
    name: str,
    entrypoint: list[str],
    env: list[str] | None = None,
    cmd: list[str] | None = None,
) -> str:
    """Writes the archive to `out`; returns the manifest's digest."""
    layer = _layer(rootfs)
    compressed = gzip.compress(layer, mtime=0)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": entrypoint,
            "Cmd": cmd or [],
            "Env": env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        },
        "rootfs": {"type": "layers", "diff_ids": [_digest(layer)]},
    }
    config_blob = json.dumps(config, sort_keys=True).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": _descriptor(CONFIG, config_blob),
        "layers": [_descriptor(LAYER, compressed)],
    }
    manifest_blob = json.dumps(manifest, sort_keys=True).encode()
    tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else "latest"
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                **_descriptor(MANIFEST, manifest_blob),
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": tag,
                },
            }
        ],
    }
    files = {
        "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
        "index.json": json.dumps(index, sort_keys=True).encode(),
    }
    for blob in (compressed, config_blob, manifest_blob):
        files["blobs/sha256/" + hashlib.sha256(blob).hexdigest()] = blob
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with tarfile.open(partial, "w") as tar:
        for directory in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for arcname, blob in files.items():
            info = tarfile.TarInfo(arcname)
            info.size, info.mode = len(blob), 0o644
            tar.addfile(info, io.BytesIO(blob))
    partial.replace(out)
    return _digest(manifest_blob)


def main() -> None:
    parser = argparse.ArgumentParser(description="directory -> OCI image archive")
    parser.add_argument("rootfs", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--name", required=True, help="full image reference, e.g. host/name:tag")
    parser.add_argument("--entrypoint", nargs="+", required=True)
    parser.add_argument("--env", action="append", default=None)
    args = parser.parse_args()
    print(build(args.rootfs, args.out, args.name, args.entrypoint, args.env))


if __name__ == "__main__":
    main()
