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
from tests.kube_standin.fixtures import MIRRORD_TRACE, wait_until
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


def run_in_container(
    bundle: Path, *args: str, capabilities: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """Run one command in a container of the image under runc, in namespaces of its own (a
    new network namespace among them), with runc's default capabilities plus `capabilities`;
    runc's own state directory, and the container deleted afterwards."""
    image = json.loads((bundle / "image-config.json").read_text())["config"]
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"].update(
        terminal=False, args=list(args), env=image["Env"], cwd=image["WorkingDir"]
    )
    for kind in ("bounding", "effective", "permitted"):
        granted = spec["process"]["capabilities"][kind]
        granted.extend(cap for cap in capabilities if cap not in granted)
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


def test_agent_image_builds_and_reads_dns_messages(bundle: Path) -> None:
    """The agent's resolver makes its queries and reads the answers with scapy's DNS layer:
    what the image keeps of scapy does both."""
    probe = (
        "from scapy.layers.dns import DNS, DNSQR, DNSRR\n"
        "query = DNS(id=7, rd=1, qd=DNSQR(qname='web.shop.svc.cluster.local', qtype='A'))\n"
        "answer = DNS(id=7, qr=1, qd=query.qd,"
        " an=DNSRR(rrname='web.shop.svc.cluster.local', type='A', rdata='10.96.0.20'))\n"
        "reply = DNS(bytes(answer))\n"
        "print(len(bytes(query)), reply.an.rdata, reply.rcode)\n"
    )
    result = run_in_container(bundle, "python3", "-c", probe)
    assert result.returncode == 0, result.stderr
    size, address, rcode = result.stdout.split()
    assert int(size) == 12 + len("web.shop.svc.cluster.local") + 2 + 4
    assert (address, rcode) == ("10.96.0.20", "0")


def test_agent_image_steals_with_its_own_iptables(bundle: Path) -> None:
    """The agent's steal rules (nat REDIRECT with the tcp, addrtype, mark and comment matches)
    go in and come out again with the image's iptables, in the container's network namespace."""
    probe = (
        "from agent.incoming.rules import IPV4, RuleBook, agent_tag, saved_rules\n"
        "book = RuleBook(agent_tag())\n"
        "book.redirect(80, 8080)\n"
        "print(sum('REDIRECT' in rule for rule in saved_rules(IPV4)))\n"
        "book.release_all()\n"
        "print(sum('REDIRECT' in rule for rule in saved_rules(IPV4)))\n"
    )
    result = run_in_container(bundle, "python3", "-c", probe, capabilities=("CAP_NET_ADMIN",))
    assert result.returncode == 0, result.stderr
    added, left = (int(line) for line in result.stdout.split())
    assert added >= 1
    assert left == 0


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


CTR_NAMESPACE = f"mirrord-trace-test-{secrets.token_hex(4)}"


@pytest.fixture
def containerd(tmp_path: Path) -> Iterator[Path]:
    """A containerd of its own (Debian's 1.6, with runc): root, state and socket in tmp_path,
    no CRI plugin. Afterwards the cgroups its namespace made and its mounts are removed.
    -> its socket."""
    (tmp_path / "containerd.toml").write_text(
        "version = 2\n"
        f'root = "{tmp_path}/root"\n'
        f'state = "{tmp_path}/state"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{tmp_path}/containerd.sock"\n'
        f'[ttrpc]\n  address = "{tmp_path}/containerd.sock.ttrpc"\n'
    )
    log = (tmp_path / "containerd.log").open("w")
    process = subprocess.Popen(
        ["containerd", "--config", str(tmp_path / "containerd.toml")],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    socket_path = tmp_path / "containerd.sock"
    try:
        wait_until(
            lambda: socket_path.exists() and ctr(socket_path, "version").returncode == 0,
            timeout=30,
            what=lambda: "containerd to start: " + (tmp_path / "containerd.log").read_text(),
        )
        yield socket_path
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
        # snapshots are overlay mounts under root/: none may stay mounted
        subprocess.run(["umount", "-R", str(tmp_path / "root")], capture_output=True)
        for hierarchy in Path("/sys/fs/cgroup").glob(f"*/{CTR_NAMESPACE}"):
            for directory in sorted(hierarchy.glob("**/"), key=lambda p: -len(p.parts)):
                directory.rmdir()


def ctr(socket_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ctr", "--address", str(socket_path), "-n", CTR_NAMESPACE, *args],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def test_agent_image_imported_into_containerd_runs_the_agent(
    built: Built, containerd: Path
) -> None:
    """As `kind load image-archive`, `k3d image import` and a node's `ctr images import` load
    it: the image gets the name a pod spec's `mirrord-trace-agent:0.1.0` normalises to, and a
    container of it runs the agent."""
    imported = ctr(containerd, "images", "import", str(built.archive))
    assert imported.returncode == 0, imported.stderr
    name = "docker.io/library/mirrord-trace-agent:0.1.0"
    listed = ctr(containerd, "images", "ls", "-q")
    assert listed.stdout.split() == [name]
    container = f"agent-{secrets.token_hex(4)}"
    try:
        ran = ctr(containerd, "run", "--rm", name, container, "python3", "-m", "agent", "--help")
    finally:
        ctr(containerd, "tasks", "kill", "-s", "KILL", container)
        ctr(containerd, "containers", "delete", container)
    assert ran.returncode == 0, ran.stderr
    assert "--container-id" in ran.stdout
