"""End to end through the stand-in API server: `exec --target pod/app` against the sandbox pod.

The stand-in's pod `app` is the sandbox: its container id names a real cgroup holding the
sandbox's target process, its network namespace is the sandbox's. When mirrord-trace creates
the agent Job, the stand-in's kubelet runs the Job's container command (the real agent, which
finds the target by container id) and the session goes through a real WebSocket port-forward.
"""

from __future__ import annotations

import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from mirrord_trace.sandbox import SandboxInfo
from tests.conftest import ROOT, example_binary
from tests.kube_standin.cgroups import ContainerCgroup, NoWritableCgroups
from tests.kube_standin.cluster import HANGING_IMAGE
from tests.kube_standin.fixtures import (  # noqa: F401
    KubeCli,
    interrupt,
    kube_fixture,
    standin_fixture,
    the_error,
    wait_until,
)
from tests.kube_standin.objects import new_container_id

MESH_SIDECAR_ID = f"containerd://{new_container_id()}"


@pytest.fixture(scope="module")
def app_container_id(sandbox: SandboxInfo) -> Iterator[str]:
    """The sandbox's target process, put in a container cgroup as a runtime would."""
    container_id = new_container_id()
    try:
        cgroup = ContainerCgroup(container_id).__enter__()
    except NoWritableCgroups as error:
        pytest.skip(f"kernel feature missing: {error}")
    try:
        cgroup.add(sandbox.target_pid)
        yield f"containerd://{container_id}"
    finally:
        cgroup.__exit__(None, None, None)


@pytest.fixture
def app(kube: KubeCli, sandbox: SandboxInfo, app_container_id: str) -> KubeCli:
    """pod/app (the sandbox), deployment/app selecting it, and pod/meshed (app + istio-proxy)."""
    common = {"netns": sandbox.netns_path, "pod_ip": sandbox.target_addr}
    kube.cluster.add_pod(
        "app", ["app"], container_ids={"app": app_container_id}, labels={"app": "app"}, **common
    )
    kube.cluster.add_deployment("app", {"app": "app"})
    kube.cluster.add_pod(
        "meshed",
        ["istio-proxy", "app"],
        labels={"app": "meshed"},
        container_ids={"app": app_container_id, "istio-proxy": MESH_SIDECAR_ID},
        **common,
    )
    return kube


def assert_agent_removed(kube: KubeCli) -> None:
    """No agent Job, no agent pod, no agent process left (deletion is graceful: wait)."""

    def left() -> list[object]:
        return [
            *(job["metadata"]["name"] for job in kube.cluster.objects("Job")),
            *(pod["metadata"]["name"] for pod in kube.cluster.agent_pods()),
            *kube.cluster.kubelet.live_processes(),
        ]

    wait_until(lambda: not left(), timeout=15, what=lambda: f"the agent's removal: {left()}")


def probe(*args: str) -> list[str]:
    return [str(example_binary("probe-go")), *args]


def test_kube_exec_pod_static_go_sees_the_pods_env_and_files(
    app: KubeCli, sandbox: SandboxInfo
) -> None:
    started = time.monotonic()
    result = app.run("exec", "--target", "pod/app", "--", *probe("env", "APP_SECRET"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{sandbox.app_secret}\n"
    assert "agent ready" in result.stderr  # start-up progress is visible
    assert_agent_removed(app)
    # It went the real way: one Job created, WebSocket port-forwards (retried until the agent
    # listens).
    created = [r for r in app.cluster.requests if r[0] == "POST" and r[1].endswith("/jobs")]
    assert len(created) == 1 and app.cluster.port_forwards >= 1
    assert time.monotonic() - started < 30

    path, content = next((p, c) for p, c in sorted(sandbox.files.items()) if p.startswith("/app/"))
    result = app.run("exec", "--target", "pod/app", "--", *probe("cat", path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == content
    assert_agent_removed(app)


def test_kube_exec_resolves_and_reaches_a_cluster_only_service(
    app: KubeCli, sandbox: SandboxInfo
) -> None:
    name = next(
        n for n, address in sorted(sandbox.names.items()) if address == sandbox.service_addr
    )
    url = f"http://{name}:{sandbox.service_port}/"
    result = app.run("exec", "--target", "pod/app", "--", *probe("http-get", url))
    assert result.returncode == 0, result.stderr
    assert result.stdout == sandbox.service_body
    assert_agent_removed(app)


def test_kube_exec_deployment_and_a_pod_with_a_mesh_sidecar(
    app: KubeCli, sandbox: SandboxInfo
) -> None:
    for target in ("deployment/app", "pod/meshed", "pod/meshed/container/app"):
        result = app.run("exec", "--target", target, "--", *probe("env", "APP_SECRET"))
        assert result.returncode == 0, (target, result.stderr)
        assert result.stdout == f"{sandbox.app_secret}\n"
        assert "/container/app in namespace" in result.stderr  # istio-proxy was skipped
    assert_agent_removed(app)


def test_kube_exec_with_the_target_in_the_config_file(app: KubeCli, sandbox: SandboxInfo) -> None:
    config = app.config_file(
        "mirrord.yaml", "target:\n  path: pod/app\n  namespace: default\nagent:\n  ttl: 5\n"
    )
    result = app.run("exec", "-f", str(config), "--", *probe("env", "APP_SECRET"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{sandbox.app_secret}\n"


def test_kube_exec_through_an_ephemeral_container(app: KubeCli, sandbox: SandboxInfo) -> None:
    result = app.run(
        "exec", "--ephemeral-container", "--target", "pod/app", "--", *probe("env", "APP_SECRET")
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{sandbox.app_secret}\n"
    pod = app.cluster.store.get("Pod", "default", "app")
    assert pod is not None
    (agent,) = pod["spec"]["ephemeralContainers"]
    assert agent["targetContainerName"] == "app"
    assert not app.cluster.objects("Job")


def test_kube_exec_with_only_the_documented_role(app: KubeCli, sandbox: SandboxInfo) -> None:
    app.cluster.rbac_rules = documented_role_rules()
    result = app.run("exec", "--target", "deployment/app", "--", *probe("env", "APP_SECRET"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{sandbox.app_secret}\n"
    assert_agent_removed(app)
    result = app.run("ls")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["pod/app", "pod/meshed", "deployment/app"]


def documented_role_rules() -> list[dict]:
    text = (ROOT / "docs" / "kubernetes.md").read_text()
    blocks = [
        document
        for block in re.findall(r"```yaml\n(.*?)```", text, re.S)
        for document in yaml.safe_load_all(block)
    ]
    roles = [b for b in blocks if isinstance(b, dict) and b.get("kind") == "Role"]
    assert len(roles) == 1, "docs/kubernetes.md must show exactly one Role"
    return roles[0]["rules"]


def test_kube_exec_receives_stolen_traffic_and_ctrl_c_removes_the_agent(
    app: KubeCli, sandbox: SandboxInfo
) -> None:
    process = app.start("exec", "--target", "pod/app", "--steal", "--", *probe("serve", ":8080"))
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening"), (line, process.stderr.read() if process.poll() else "")
        url = f"http://{sandbox.target_addr}:{sandbox.app_port}/stolen"
        with urllib.request.urlopen(url, timeout=10) as answer:
            assert answer.read().startswith(b"hello from probe-go\n")
        assert app.cluster.agent_pods()  # still running while the program runs
        interrupt(process)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert_agent_removed(app)
    # The app answers for itself again once the agent (and its redirect) is gone.
    with urllib.request.urlopen(sandbox.app_url, timeout=10) as answer:
        assert answer.read() == sandbox.app_body.encode()


def test_kube_ctrl_c_during_start_up_removes_the_agent(app: KubeCli) -> None:
    config = app.config_file("hang.json", f'{{"agent": {{"image": "{HANGING_IMAGE}"}}}}')
    process = app.start("exec", "-f", str(config), "--target", "pod/app", "--", "/bin/true")
    try:
        wait_until(lambda: app.cluster.agent_pods(), what="the agent pod")
        wait_until(
            lambda: "ContainerCreating" in str(app.cluster.agent_pods()[0].get("status")),
            what="ContainerCreating",
        )
        interrupt(process)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    result = subprocess.CompletedProcess(process.args, process.returncode, "", stderr)
    assert "interrupted during start-up" in the_error(result, status=130)
    assert_agent_removed(app)


def test_kube_sigterm_during_start_up_removes_the_agent_too(app: KubeCli) -> None:
    config = app.config_file("hang.json", f'{{"agent": {{"image": "{HANGING_IMAGE}"}}}}')
    process = app.start("exec", "-f", str(config), "--target", "pod/app", "--", "/bin/true")
    try:
        wait_until(lambda: app.cluster.agent_pods(), what="the agent pod")
        process.terminate()
        process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode != 0
    assert_agent_removed(app)


def test_kube_nothing_is_left_in_the_sandbox(sandbox: SandboxInfo) -> None:
    """Runs after the others in this module: the sandbox target is unharmed."""
    assert Path(f"/proc/{sandbox.target_pid}").exists()
