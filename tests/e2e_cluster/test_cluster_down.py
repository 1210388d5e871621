"""`make cluster-down` leaves the host as `make cluster` found it: no process, mount, network
namespace, veth or bridge, iptables chain, cgroup, host file or kernel setting of the cluster
remains. It runs after every other test of the session (it takes the cluster down); when the
cluster was running before the session, it brings it back up afterwards."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.cluster import host_state, layout

pytestmark = [pytest.mark.cluster, pytest.mark.cluster_teardown]


def _pod_veths() -> set[str]:
    out = subprocess.run(
        ["ip", "-o", "link", "show", "master", layout.CNI_BRIDGE], capture_output=True, text=True
    ).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def _cluster_chains(command: str) -> set[str]:
    return {c for c in host_state.chains(command) if host_state.is_cluster_chain(c.split("/")[1])}


def _make(target: str) -> None:
    subprocess.run(["make", "-s", target], cwd=layout.REPO, check=True, capture_output=True)


def test_cluster_down_leaves_nothing(cluster_session: dict) -> None:
    before = host_state.recorded()
    assert before is not None, f"{layout.BEFORE} missing: `make cluster` records it"
    veths = _pod_veths()
    pod_netns = {n for n in host_state.netns() if n.startswith("cni-")} - set(before["netns"])
    # The running cluster did make what is checked below (else the check proves nothing).
    assert veths and pod_netns, "the cluster runs pods: CoreDNS at least"
    assert _cluster_chains("iptables") - set(before["iptables"])
    assert host_state.cluster_processes()

    _make("cluster-down")

    assert host_state.cluster_processes() == set()
    assert not (host_state.netns() & pod_netns)
    assert layout.CNI_BRIDGE not in host_state.links()
    assert not (host_state.links() & veths)
    assert _cluster_chains("iptables") - set(before["iptables"]) == set()
    assert _cluster_chains("ip6tables") - set(before["ip6tables"]) == set()
    state = str(layout.STATE)
    assert [m for m in host_state.mounts() if m.startswith(state)] == []
    assert not [p for p in Path("/sys/fs/cgroup").glob("*/kubepods")]
    assert host_state.host_files() - set(before["files"]) == set()
    # A directory the cluster created stays only while another user's entries keep it
    # (/run/containerd is shared with every containerd and runc on the machine).
    created = {str(d) for d in host_state.HOST_DIRS_CREATED}
    for directory in host_state.host_dirs() - set(before["dirs"]):
        assert {str(p) for p in Path(directory).iterdir()} - created, directory
    assert host_state.sysctls() == before["sysctls"]
    assert not layout.STATE.exists()

    if cluster_session["was_running"]:
        _make("cluster")
