"""`mirrord-trace agent-image build`: the agent image as an OCI archive, from Debian's packages
and this installation's agent sources, with no container engine and no registry.

    layer 1  the Debian base (rootfs.py), cached as a tree and as a finished layer
    layer 2  /opt/mirrord-trace: the agent's sources (agent_tree.py), a few hundred KiB

A second build reuses both the tree and the base layer: it writes only the agent layer and
the archive. Every file time in the layers, and the image's creation time, is at most the
time the cached base was built (so the base's own files keep theirs, which the
timestamp-checked .pyc files of Debian's Python need, and the agent's sources get it): the same
cache and sources give the same image, byte for byte.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mirrord_trace import __version__
from mirrord_trace.agent_image.agent_tree import stage_agent
from mirrord_trace.agent_image.archive import ImageSpec, write_archive
from mirrord_trace.agent_image.layer import Layer, write_layer
from mirrord_trace.agent_image.reference import Reference, parse_reference
from mirrord_trace.agent_image.rootfs import (
    AGENT_DIR,
    DEFAULT_MIRROR,
    PACKAGES,
    SUITE,
    BaseRootfs,
    base_rootfs,
)

DEFAULT_NAME = f"mirrord-trace-agent:{__version__}"
ENV = (
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    f"PYTHONPATH=/{AGENT_DIR}",
    # The agent's one-line errors reach the pod's log (and its termination message) at once.
    "PYTHONUNBUFFERED=1",
    # The image is read-only in spirit: the sources are compiled already.
    "PYTHONDONTWRITEBYTECODE=1",
)
SOURCE = "https://github.com/mirrord-trace/mirrord-trace"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mirrord-trace" / "agent-image"


def default_output() -> Path:
    return default_cache_dir() / f"mirrord-trace-agent-{__version__}.oci.tar"


@dataclass(frozen=True, slots=True)
class BuiltImage:
    path: Path
    reference: Reference
    manifest_digest: str
    layers: tuple[Layer, ...]

    @property
    def size(self) -> int:
        return self.path.stat().st_size


def _base_layer(base: BaseRootfs, clamp: int, progress: Callable[[str], None]) -> Layer:
    """The base tree's layer, written once per (tree, clamp) and kept next to the tree."""
    cached = base.path.with_name(f"{base.path.name}.{clamp}.layer.tar.gz")
    facts = cached.with_suffix(".json")
    if cached.is_file() and facts.is_file():
        known = json.loads(facts.read_text())
        return Layer(cached, known["digest"], known["size"], known["diff_id"])
    progress(f"writing the base layer from {base.path}")
    partial = cached.with_name(cached.name + ".part")
    layer = write_layer(base.path, partial, clamp)
    partial.replace(cached)
    facts.write_text(
        json.dumps({"digest": layer.digest, "size": layer.size, "diff_id": layer.diff_id})
    )
    return Layer(cached, layer.digest, layer.size, layer.diff_id)


def _spec(base: BaseRootfs, clamp: int) -> ImageSpec:
    return ImageSpec(
        architecture=base.architecture,
        created=clamp,
        env=ENV,
        # mirrord-trace's Job gives the full command; alone, the image explains itself.
        cmd=("python3", "-m", "agent", "--help"),
        working_dir=f"/{AGENT_DIR}",
        labels={
            "org.opencontainers.image.title": "mirrord-trace agent",
            "org.opencontainers.image.version": __version__,
            "org.opencontainers.image.source": SOURCE,
            "org.opencontainers.image.licenses": "GPL-2.0-or-later",
        },
        history=(
            f"debootstrap --variant=minbase {SUITE} --include={','.join(PACKAGES)}",
            f"mirrord-trace agent-image build: /{AGENT_DIR}",
        ),
    )


def build_image(
    output: Path,
    cache_dir: Path,
    name: str = DEFAULT_NAME,
    mirror: str = DEFAULT_MIRROR,
    progress: Callable[[str], None] = lambda _: None,
) -> BuiltImage:
    reference = parse_reference(name)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # One build at a time per cache: a second one waits, then finds the base made (and no
    # build prunes a tree another one is using).
    with (cache_dir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        base = base_rootfs(cache_dir, mirror, progress)
        clamp = base.created
        base_layer = _base_layer(base, clamp, progress)
        agent_layer_dir = tempfile.TemporaryDirectory(dir=cache_dir, prefix="agent-layer-")
        with agent_layer_dir as work:
            progress("writing the agent layer")
            stage_agent(Path(work) / "tree", base.path)
            agent_layer = write_layer(Path(work) / "tree", Path(work) / "agent.tar.gz", clamp)
            layers = [base_layer, agent_layer]
            progress(f"writing {output}")
            output.parent.mkdir(parents=True, exist_ok=True)
            digest = write_archive(output, reference, _spec(base, clamp), layers)
    return BuiltImage(output, reference, digest, tuple(layers))
