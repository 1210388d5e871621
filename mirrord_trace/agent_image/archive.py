"""The image archive: an OCI image layout in one uncompressed tar, readable by every tool that
loads images.

    oci-layout, index.json, blobs/sha256/<hex>   the OCI image layout (containerd's `ctr images
                                                 import`, kind, k3d, skopeo oci-archive:, podman)
    manifest.json                                Docker's `docker save` index of the same blobs
                                                 (`docker load`, also before Docker 25; minikube)

Every file in it is addressed by its sha256, so the same layers and config give the same
archive. `read_archive` gives the blobs back for a push.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from mirrord_trace.agent_image.layer import Layer
from mirrord_trace.agent_image.reference import Reference

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
# containerd names an imported image by this annotation (the full, normalised reference);
# the OCI one is the name other tools (skopeo, podman) pick the image by.
CONTAINERD_NAME = "io.containerd.image.name"
OCI_REF_NAME = "org.opencontainers.image.ref.name"


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def sha256_digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def blob_name(digest: str) -> str:
    algorithm, hex_digest = digest.split(":", 1)
    return f"blobs/{algorithm}/{hex_digest}"


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True, slots=True)
class ImageSpec:
    """What the image config says besides its layers."""

    architecture: str  # GOARCH names: amd64, arm64
    created: int  # seconds since the epoch
    env: tuple[str, ...]
    cmd: tuple[str, ...]
    working_dir: str
    labels: dict[str, str]
    history: tuple[str, ...]  # one `created_by` per layer


def image_config(spec: ImageSpec, layers: list[Layer]) -> bytes:
    created = datetime.datetime.fromtimestamp(spec.created, datetime.UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    return canonical_json(
        {
            "architecture": spec.architecture,
            "os": "linux",
            "created": created,
            "config": {
                "Env": list(spec.env),
                "Cmd": list(spec.cmd),
                "WorkingDir": spec.working_dir,
                "Labels": spec.labels,
            },
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
            "history": [{"created": created, "created_by": step} for step in spec.history],
        }
    )


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    archive.addfile(info, io.BytesIO(data))


def _add_directory(archive: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    archive.addfile(info)


def write_archive(output: Path, reference: Reference, spec: ImageSpec, layers: list[Layer]) -> str:
    """Write the archive; returns the manifest's digest (the image's identity in a registry)."""
    config = image_config(spec, layers)
    config_descriptor = Descriptor(CONFIG_TYPE, sha256_digest(config), len(config))
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": config_descriptor.to_json(),
            "layers": [Descriptor(LAYER_TYPE, lay.digest, lay.size).to_json() for lay in layers],
        }
    )
    manifest_digest = sha256_digest(manifest)
    index = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": INDEX_TYPE,
            "manifests": [
                {
                    **Descriptor(MANIFEST_TYPE, manifest_digest, len(manifest)).to_json(),
                    "annotations": {
                        CONTAINERD_NAME: reference.normalized(),
                        OCI_REF_NAME: reference.familiar(),
                    },
                    "platform": {"architecture": spec.architecture, "os": "linux"},
                }
            ],
        }
    )
    docker_manifest = canonical_json(
        [
            {
                "Config": blob_name(config_descriptor.digest),
                "RepoTags": [reference.familiar()],
                "Layers": [blob_name(layer.digest) for layer in layers],
            }
        ]
    )
    partial = output.with_name(output.name + ".part")
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as archive:
        _add_bytes(archive, "oci-layout", canonical_json({"imageLayoutVersion": "1.0.0"}))
        _add_bytes(archive, "index.json", index)
        _add_bytes(archive, "manifest.json", docker_manifest)
        _add_directory(archive, "blobs")
        _add_directory(archive, "blobs/sha256")
        _add_bytes(archive, blob_name(config_descriptor.digest), config)
        _add_bytes(archive, blob_name(manifest_digest), manifest)
        for layer in layers:
            info = tarfile.TarInfo(blob_name(layer.digest))
            info.size = layer.size
            info.mode = 0o644
            with layer.path.open("rb") as data:
                archive.addfile(info, data)
    partial.replace(output)
    return manifest_digest


class ArchiveError(Exception):
    """The file is not an image archive this module can read."""


@dataclass
class ImageArchive:
    """An archive opened for reading: its manifest and a way to stream each blob."""

    tar: tarfile.TarFile
    manifest: bytes
    manifest_digest: str
    name: str  # the reference the archive was built with

    @property
    def manifest_json(self) -> dict[str, Any]:
        return json.loads(self.manifest)

    def blobs(self) -> list[Descriptor]:
        """The config first, then the layers."""
        manifest = self.manifest_json
        return [
            Descriptor(item["mediaType"], item["digest"], item["size"])
            for item in (manifest["config"], *manifest["layers"])
        ]

    def open_blob(self, digest: str) -> IO[bytes]:
        try:
            member = self.tar.extractfile(blob_name(digest))
        except KeyError:
            member = None
        if member is None:
            raise ArchiveError(f"the archive has no blob {digest}")
        return member


@contextmanager
def read_archive(path: Path) -> Iterator[ImageArchive]:
    try:
        tar = tarfile.open(path, "r:")  # noqa: SIM115 (closed below, after the yield)
    except (OSError, tarfile.TarError) as error:
        raise ArchiveError(f"{path} is not a readable image archive ({error})") from None
    with tar:
        try:
            index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
            entry = index["manifests"][0]
            member = tar.extractfile(blob_name(entry["digest"]))
            manifest = member.read() if member else b""
        except (KeyError, IndexError, ValueError, TypeError) as error:
            raise ArchiveError(f"{path} is not an OCI image archive ({error!r})") from None
        if sha256_digest(manifest) != entry["digest"]:
            raise ArchiveError(f"{path}: the manifest does not match its digest")
        annotations = entry.get("annotations", {})
        name = annotations.get(OCI_REF_NAME) or annotations.get(CONTAINERD_NAME, "")
        yield ImageArchive(tar, manifest, entry["digest"], name)
