"""The image archive format, on a small tree made here (the real image is in
test_agent_image_build.py): the same tree gives the same bytes, file times are clamped, device
nodes stay out, and a third-party tool (skopeo, Debian's) reads the archive as an OCI archive
and as a `docker save` archive."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from mirrord_trace.agent_image.archive import (
    LAYER_TYPE,
    ArchiveError,
    ImageSpec,
    read_archive,
    write_archive,
)
from mirrord_trace.agent_image.layer import write_layer
from mirrord_trace.agent_image.reference import ReferenceError, parse_reference

CLAMP = 1_700_000_000
OLD = 1_600_000_000


def make_tree(root: Path) -> None:
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/tool").write_text("#!/bin/sh\necho hi\n")
    (root / "usr/bin/tool").chmod(0o755)
    (root / "usr/bin/link").symlink_to("tool")
    os.link(root / "usr/bin/tool", root / "usr/bin/hard")
    (root / "etc").mkdir()
    (root / "etc/old.conf").write_text("old\n")
    os.utime(root / "etc/old.conf", (OLD, OLD))
    (root / "dev").mkdir()
    os.mknod(root / "dev/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    (root / "run").mkdir()
    os.mkfifo(root / "run/fifo")


def spec() -> ImageSpec:
    return ImageSpec(
        architecture="amd64",
        created=CLAMP,
        env=("PATH=/usr/bin",),
        cmd=("/usr/bin/tool",),
        working_dir="/",
        labels={"a": "b"},
        history=("a tree made by a test",),
    )


def build(tmp_path: Path, name: str, extra: bytes = b"") -> Path:
    """An archive of make_tree's tree (plus a file of `extra` bytes, if any)."""
    tree = tmp_path / f"tree-{name}"
    tree.mkdir()
    make_tree(tree)
    if extra:
        (tree / "extra").write_bytes(extra)
    layer = write_layer(tree, tmp_path / f"{name}.tar.gz", CLAMP)
    output = tmp_path / f"{name}.oci.tar"
    write_archive(output, parse_reference("example-agent:1.2"), spec(), [layer])
    return output


def test_agent_image_archive_is_the_same_for_the_same_tree(tmp_path: Path) -> None:
    first, second = build(tmp_path, "one"), build(tmp_path, "two")
    assert first.read_bytes() == second.read_bytes()


def test_agent_image_layer_holds_the_tree_with_clamped_times(tmp_path: Path) -> None:
    archive = build(tmp_path, "one")
    with read_archive(archive) as image:
        manifest = image.manifest_json
        assert [layer["mediaType"] for layer in manifest["layers"]] == [LAYER_TYPE]
        digest = manifest["layers"][0]["digest"]
        data = image.open_blob(digest).read()
        config = json.loads(image.open_blob(manifest["config"]["digest"]).read())
    assert f"sha256:{hashlib.sha256(data).hexdigest()}" == digest
    plain = gzip.decompress(data)
    assert config["rootfs"]["diff_ids"] == [f"sha256:{hashlib.sha256(plain).hexdigest()}"]
    assert config["config"]["Cmd"] == ["/usr/bin/tool"]
    with tarfile.open(fileobj=io.BytesIO(plain)) as layer:
        members = {member.name: member for member in layer.getmembers()}
    # device nodes and FIFOs are the runtime's business; the directories stay
    assert "dev/null" not in members and "run/fifo" not in members
    assert members["dev"].isdir() and members["run"].isdir()
    assert members["usr/bin/link"].issym() and members["usr/bin/link"].linkname == "tool"
    assert members["usr/bin/hard"].islnk() or members["usr/bin/tool"].islnk()
    assert members["usr/bin/tool"].mode & 0o777 == 0o755
    assert members["etc/old.conf"].mtime == OLD  # older than the clamp: kept
    assert members["usr/bin/tool"].mtime == CLAMP  # made just now: clamped
    assert list(members) == sorted(members, key=lambda name: name.split("/"))


def test_agent_image_archive_is_read_by_skopeo_as_oci_and_docker_archive(tmp_path: Path) -> None:
    archive = build(tmp_path, "one")
    with read_archive(archive) as image:
        layer_digests = [layer["digest"] for layer in image.manifest_json["layers"]]
    for transport in (f"oci-archive:{archive}", f"docker-archive:{archive}"):
        result = subprocess.run(
            ["skopeo", "inspect", "--config", transport],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, (transport, result.stderr)
        config = json.loads(result.stdout)
        assert config["config"]["Cmd"] == ["/usr/bin/tool"], transport
    result = subprocess.run(
        ["skopeo", "inspect", f"oci-archive:{archive}"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["Layers"] == layer_digests


def test_agent_image_archive_that_is_not_one_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.tar"
    with tarfile.open(bogus, "w") as archive:
        archive.add(__file__, arcname="index.json")
    with pytest.raises(ArchiveError, match="is not an OCI image archive"), read_archive(bogus):
        pass
    (tmp_path / "text").write_text("hello")
    with (
        pytest.raises(ArchiveError, match="not a readable image archive"),
        read_archive(tmp_path / "text"),
    ):
        pass


@pytest.mark.parametrize(
    ("text", "normalized", "familiar", "api_host"),
    [
        ("agent:1", "docker.io/library/agent:1", "agent:1", "registry-1.docker.io"),
        ("team/agent", "docker.io/team/agent:latest", "team/agent:latest", "registry-1.docker.io"),
        ("localhost:5000/a/b:t", "localhost:5000/a/b:t", "localhost:5000/a/b:t", "localhost:5000"),
        ("ghcr.io/o/agent:0.1.0", "ghcr.io/o/agent:0.1.0", "ghcr.io/o/agent:0.1.0", "ghcr.io"),
        ("127.0.0.1:5000/agent:1", "127.0.0.1:5000/agent:1", "127.0.0.1:5000/agent:1", None),
    ],
)
def test_agent_image_references_are_read_as_docker_reads_them(
    text: str, normalized: str, familiar: str, api_host: str | None
) -> None:
    reference = parse_reference(text)
    assert reference.normalized() == normalized
    assert reference.familiar() == familiar
    assert reference.api_host == (api_host or reference.registry)


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("Agent:1", "is not a repository name"),
        ("reg.example/agent@sha256:00", "names a digest"),
        ("reg.example/agent:t@g", "names a digest"),
        ("reg.example/agent:-x", "is not a tag"),
    ],
)
def test_agent_image_bad_references_say_which_part_is_wrong(text: str, complaint: str) -> None:
    with pytest.raises(ReferenceError, match=complaint):
        parse_reference(text)
