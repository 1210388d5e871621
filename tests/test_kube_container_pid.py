"""The agent finds a Kubernetes container's main process from its container id, against real
cgroups on this machine laid out the way containerd, CRI-O, Docker and cgroupfs kubelets do."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.target.container_pid import (
    ContainerNotFound,
    container_processes,
    find_container_pid,
    parse_container_id,
)
from mirrord_trace.agent_client import AgentClient
from mirrord_trace.protocol import new_token
from tests.conftest import ROOT
from tests.kube_standin.cgroups import LAYOUTS, ContainerCgroup, NoWritableCgroups

TOKEN_ENV = "MIRRORD_TRACE_AGENT_TOKEN"


def new_container_id() -> str:
    return secrets.token_hex(32)


@pytest.fixture
def container_init() -> Iterator[subprocess.Popen[bytes]]:
    """A shell that, once told to (a line on stdin), forks a child and waits: the child is
    forked after the shell was moved into a cgroup, so it is in there too, like a container's
    worker processes."""
    process = subprocess.Popen(
        ["/bin/sh", "-c", "read go; sleep 300 & wait"],
        stdin=subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", "CONTAINER_MARK": secrets.token_hex(8)},
    )
    try:
        yield process
    finally:
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        for child in children:
            os.kill(int(child), signal.SIGKILL)
        process.kill()
        process.wait()


def enter_container(cgroup: ContainerCgroup, process: subprocess.Popen[bytes]) -> int:
    """Move the process into the container and let it fork its child; -> the child's pid."""
    cgroup.add(process.pid)
    assert process.stdin is not None
    process.stdin.write(b"go\n")
    process.stdin.flush()
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    deadline = time.monotonic() + 30  # a loaded machine may take a while to run the shell
    while time.monotonic() < deadline:
        if pids := children.read_text().split():
            return int(pids[0])
        time.sleep(0.002)
    raise AssertionError("the container's init did not fork its child")


def runtime_cgroup(container_id: str, layout: str) -> ContainerCgroup:
    try:
        return ContainerCgroup(container_id, layout).__enter__()
    except NoWritableCgroups as error:
        pytest.skip(f"kernel feature missing: {error}")


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_kube_container_pid_is_the_containers_init_in_every_runtime_layout(
    layout: str, container_init: subprocess.Popen[bytes]
) -> None:
    container_id = new_container_id()
    cgroup = runtime_cgroup(container_id, layout)
    try:
        child = enter_container(cgroup, container_init)
        members = container_processes(container_id)
        assert set(members) == {container_init.pid, child}
        assert find_container_pid(f"containerd://{container_id}") == container_init.pid
        assert find_container_pid(container_id) == container_init.pid
    finally:
        cgroup.__exit__(None, None, None)
    with pytest.raises(ContainerNotFound):
        find_container_pid(container_id)  # gone with its cgroup


def test_kube_container_pid_ignores_containers_whose_ids_merely_overlap(
    container_init: subprocess.Popen[bytes],
) -> None:
    container_id = new_container_id()
    cgroup = runtime_cgroup(container_id, "containerd-systemd")
    try:
        enter_container(cgroup, container_init)
        def other_than(digit: str) -> str:
            return "0" if digit != "0" else "1"

        # Same id but for its last or its first digit (each replaced by a different digit).
        overlapping = (
            container_id[:-1] + other_than(container_id[-1]),
            other_than(container_id[0]) + container_id[1:],
        )
        for other in overlapping:
            assert other != container_id
            with pytest.raises(ContainerNotFound, match="no process on this node"):
                find_container_pid(f"containerd://{other}")
    finally:
        cgroup.__exit__(None, None, None)


def test_kube_container_pid_prefers_the_oldest_when_unrelated_processes_share_the_cgroup(
    container_init: subprocess.Popen[bytes],
) -> None:
    container_id = new_container_id()
    cgroup = runtime_cgroup(container_id, "crio-systemd")
    later = subprocess.Popen(["sleep", "300"])
    try:
        cgroup.add(later.pid)
        cgroup.add(container_init.pid)
        assert find_container_pid(f"cri-o://{container_id}") == container_init.pid
    finally:
        cgroup.__exit__(None, None, None)
        later.kill()
        later.wait()


@pytest.mark.parametrize(
    "raw", ["", "containerd://", "containerd://abc", "x" * 64, "docker://" + "A" * 64]
)
def test_kube_container_id_that_is_not_one_is_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="is not a container id"):
        parse_container_id(raw)


def test_kube_agent_started_with_container_id_serves_that_container(
    container_init: subprocess.Popen[bytes],
) -> None:
    container_id = new_container_id()
    cgroup = runtime_cgroup(container_id, "cgroupfs-v1")
    token = new_token()
    try:
        enter_container(cgroup, container_init)
        agent = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agent",
                "--container-id",
                f"containerd://{container_id}",
                "--listen",
                "127.0.0.1:0",
                "--idle-ttl",
                "20",
            ],
            cwd=ROOT,
            env={**os.environ, TOKEN_ENV: token},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert agent.stdout is not None
            ready = json.loads(agent.stdout.readline() or b"null")
            assert ready is not None, agent.stderr.read() if agent.stderr else ""
            with AgentClient.connect("127.0.0.1", ready["port"], token) as client:
                assert client.session_info["target_pid"] == container_init.pid
                env = client.request("env")["env"]
                mark = Path(f"/proc/{container_init.pid}/environ").read_bytes()
                assert f"CONTAINER_MARK={env['CONTAINER_MARK']}".encode() in mark
        finally:
            agent.kill()
            agent.wait()
    finally:
        cgroup.__exit__(None, None, None)


def test_kube_agent_with_an_unknown_container_says_where_to_look() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agent", "--container-id", "containerd://" + new_container_id()],
        cwd=ROOT,
        env={**os.environ, TOKEN_ENV: new_token()},
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 1
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1
    assert "no process on this node belongs to container" in lines[0]
    assert "hostPID" in lines[0]
