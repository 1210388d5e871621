"""The real agent image: `mirrord-trace agent-image build` makes it from Debian's packages (the
debootstrap tree is cached in build/agent-image/cache, shared with `make agent-image`; the
first run downloads and takes minutes), and a container made from it by runc, Debian's OCI
runtime, runs the agent: `python3 -m agent --help`, every agent module imports with only what
the image holds, and iptables is there with the nf_tables backend. Pushed to a real registry,
it comes back unchanged; built twice, it is the same image.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mirrord_trace.agent_image.archive import read_archive
from tests.conftest import ROOT
from tests.kube_standin.fixtures import MIRRORD_TRACE
from tests.registry_fixtures import Registry
from tests.test_agent_image_push import assert_registry_holds, push

CACHE = ROOT / "build" / "agent-image" / "cache"


@dataclass(frozen=True)
class Built:
    archive: Path
    manifest_digest: str
    stderr: str


def build(output: Path) -> Built:
    result = subprocess.run(
        [MIRRORD_TRACE, "agent-image", "build", "--output", str(output), "--cache-dir", str(CACHE)],
        capture_output=True,
        text=True,
        timeout=1800,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(output)
    with read_archive(output) as image:
        return Built(output, image.manifest_digest, result.stderr)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return build(tmp_path_factory.mktemp("image") / "agent.oci.tar")


def unpack(archive: Path, rootfs: Path) -> dict[str, object]:
    """The image's layers, in order, into rootfs (as a runtime's snapshotter would, with GNU
    tar); returns the image config."""
    rootfs.mkdir()
    with read_archive(archive) as image:
        config = json.loads(image.open_blob(image.blobs()[0].digest).read())
        for layer in image.blobs()[1:]:
            subprocess.run(
                ["tar", "-xz", "--numeric-owner", "-C", str(rootfs)],
                input=image.open_blob(layer.digest).read(),
                check=True,
            )
    return config


@pytest.fixture(scope="module")
def bundle(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An OCI runtime bundle of the image: its root filesystem and runc's default config."""
    directory = tmp_path_factory.mktemp("bundle")
    image_config = unpack(built.archive, directory / "rootfs")
    subprocess.run(["runc", "spec"], cwd=directory, check=True)
    (directory / "image-config.json").write_text(json.dumps(image_config))
    yield directory


def run_in_container(bundle: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run one command in a container of the image under runc (its own state directory, so
    nothing is left with containerd's; `--rm` removes the container when it exits)."""
    image = json.loads((bundle / "image-config.json").read_text())["config"]
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"].update(
        terminal=False, args=list(args), env=image["Env"], cwd=image["WorkingDir"]
    )
    (bundle / "config.json").write_text(json.dumps(spec))
    state = bundle / "runc-state"
    name = f"mirrord-trace-agent-image-{secrets.token_hex(4)}"
    try:
        return subprocess.run(
            ["runc", "--root", str(state), "run", "--bundle", str(bundle), name],
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
    finally:
        subprocess.run(
            ["runc", "--root", str(state), "delete", "--force", name], capture_output=True
        )


def test_agent_image_runs_the_agent(bundle: Path) -> None:
    result = run_in_container(bundle, "python3", "-m", "agent", "--help")
    assert result.returncode == 0, result.stderr
    assert "--container-id" in result.stdout and "--listen" in result.stdout


def test_agent_image_holds_everything_the_agent_imports(bundle: Path) -> None:
    """Every module of the agent package imports inside the image (no local-side dependency
    leaks in), and the tools the agent runs are there."""
    probe = (
        "import importlib, pkgutil, agent\n"
        "modules = pkgutil.walk_packages(agent.__path__, 'agent.')\n"
        "names = [m.name for m in modules if not m.name.endswith('__main__')]\n"
        "for name in names: importlib.import_module(name)\n"
        "print(len(names))\n"
    )
    result = run_in_container(bundle, "sh", "-c", f'python3 -c "{probe}" && iptables -V && ip -V')
    assert result.returncode == 0, result.stderr
    count, iptables, ip = result.stdout.splitlines()[:3]
    assert int(count) > 5
    assert "nf_tables" in iptables
    assert "iproute2" in ip


def test_agent_image_built_twice_is_the_same_image(built: Built, tmp_path: Path) -> None:
    again = build(tmp_path / "again.oci.tar")
    assert "debootstrap" not in again.stderr  # the cached tree was used
    assert again.manifest_digest == built.manifest_digest
    assert again.archive.read_bytes() == built.archive.read_bytes()


def test_agent_image_pushed_comes_back_unchanged(built: Built, tmp_path: Path) -> None:
    with Registry(tmp_path / "registry") as registry:
        reference = f"{registry.host}/mirrord-trace-agent:0.1.0"
        result = push(tmp_path, reference, "--archive", str(built.archive))
        assert result.returncode == 0, result.stderr
        assert_registry_holds(registry, "mirrord-trace-agent", "0.1.0", built.archive)
