"""Each way a Kubernetes session can fail ends with its own one-line message (no traceback),
leaves no agent behind, and happens in seconds when there is nothing to wait for."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.kube_standin.admission import ENFORCE_LABEL
from tests.kube_standin.cgroups import ContainerCgroup, NoWritableCgroups
from tests.kube_standin.cluster import HANGING_IMAGE
from tests.kube_standin.fixtures import (  # noqa: F401
    MIRRORD_TRACE,
    KubeCli,
    kube_fixture,
    standin_fixture,
    the_error,
    wait_until,
)
from tests.kube_standin.objects import new_container_id
from tests.test_kube_exec import documented_role_rules

TRUE = ["--", "/bin/true"]


@pytest.fixture
def app(kube: KubeCli) -> Iterator[KubeCli]:
    """pod/app whose container is a real process of this machine (in a container cgroup)."""
    container_id = new_container_id()
    process = subprocess.Popen(["sleep", "300"])
    try:
        try:
            cgroup = ContainerCgroup(container_id).__enter__()
        except NoWritableCgroups as error:
            pytest.skip(f"kernel feature missing: {error}")
        try:
            cgroup.add(process.pid)
            kube.cluster.add_pod(
                "app", ["app"], container_ids={"app": f"containerd://{container_id}"}
            )
            yield kube
        finally:
            cgroup.__exit__(None, None, None)
    finally:
        process.kill()
        process.wait()


def assert_nothing_left(kube: KubeCli) -> None:
    wait_until(
        lambda: not kube.cluster.objects("Job") and not kube.cluster.agent_pods(),
        timeout=15,
        what=lambda: f"removal: {kube.cluster.objects('Job')} {kube.cluster.agent_pods()}",
    )
    wait_until(lambda: not kube.cluster.kubelet.live_processes(), timeout=15, what="agents")


def timed(kube: KubeCli, *args: str) -> tuple[str, float]:
    started = time.monotonic()
    result = kube.run(*args)
    return the_error(result), time.monotonic() - started


# -- no cluster --
def test_kube_without_any_kubeconfig_fails_at_once(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path)}
    env.pop("KUBECONFIG", None)
    env.pop("KUBERNETES_SERVICE_HOST", None)
    started = time.monotonic()
    result = subprocess.run(
        [MIRRORD_TRACE, "exec", "--target", "pod/x", *TRUE],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "no Kubernetes cluster is configured" in the_error(result)
    assert time.monotonic() - started < 10


def test_kube_with_an_unreachable_api_server_fails_in_seconds(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "gone",
                "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{port}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "gone", "context": {"cluster": "c", "user": "u"}}],
            }
        )
    )
    env = {**os.environ, "HOME": str(tmp_path), "KUBECONFIG": str(kubeconfig)}
    env["MIRRORD_AGENT_IMAGE"] = "registry.example/mirrord-trace-agent:0.1.0"
    for command in (["exec", "--target", "pod/x", *TRUE], ["ls"]):
        started = time.monotonic()
        result = subprocess.run(
            [MIRRORD_TRACE, *command], env=env, capture_output=True, text=True, timeout=60
        )
        line = the_error(result)
        assert f"cannot reach the Kubernetes API server at https://127.0.0.1:{port}" in line
        assert "context gone" in line and "refused" in line.lower()
        assert time.monotonic() - started < 10


def test_kube_unknown_context_lists_the_known_ones(kube: KubeCli) -> None:
    line, _ = timed(kube, "exec", "--context", "prod", "--target", "pod/app", *TRUE)
    assert "no context named 'prod' (it has: standin)" in line


def test_kube_rejected_credentials(kube: KubeCli) -> None:
    kube.cluster.write_kubeconfig(kube.kubeconfig, token="not-" + secrets.token_hex(8))
    line, _ = timed(kube, "exec", "--target", "pod/app", *TRUE)
    assert "did not accept the credentials of context standin (Unauthorized)" in line


# -- permissions --
@pytest.mark.parametrize(
    ("resource", "verb", "fragment"),
    [
        (
            "pods",
            "get",
            'not allowed to get pods in namespace default: pods "app" is forbidden: '
            'User "alice" cannot get resource "pods" in API group "" in the namespace "default"',
        ),
        (
            "jobs",
            "create",
            "not allowed to create jobs.batch in namespace default: jobs.batch is "
            'forbidden: User "alice" cannot create resource "jobs" in API group "batch"',
        ),
        ("pods", "watch", "not allowed to watch pods in namespace default"),
        ("pods/portforward", "create", "not allowed to create pods/portforward"),
    ],
)
def test_kube_rbac_refusal_names_the_verb_and_the_resource(
    app: KubeCli, resource: str, verb: str, fragment: str
) -> None:
    rules = documented_role_rules()
    for rule in rules:
        if resource in rule["resources"]:
            rule["verbs"] = [v for v in rule["verbs"] if v != verb]
    app.cluster.rbac_rules = rules
    line, _ = timed(app, "exec", "--target", "pod/app", *TRUE)
    assert fragment in line
    assert f"grants '{verb}' on" in line and "docs/kubernetes.md" in line
    assert_nothing_left(app)


def test_kube_pod_security_admission_refusing_the_agent_job(app: KubeCli) -> None:
    app.cluster.add_namespace("default", {ENFORCE_LABEL: "baseline"})
    line, elapsed = timed(app, "exec", "--target", "pod/app", *TRUE)
    assert "pod security admission rejected the agent in namespace default" in line
    assert 'violates PodSecurity "baseline:latest": host namespaces (hostPID=true)' in line
    assert '"NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE"' in line
    assert "pod-security.kubernetes.io/enforce=privileged" in line
    assert elapsed < 20  # read from the Job's events, not after the start-up timeout
    assert_nothing_left(app)


def test_kube_pod_security_admission_refusing_the_ephemeral_agent(app: KubeCli) -> None:
    app.cluster.add_namespace("default", {ENFORCE_LABEL: "restricted"})
    line, _ = timed(app, "exec", "--ephemeral-container", "--target", "pod/app", *TRUE)
    assert "pod security admission rejected the agent in namespace default" in line
    assert 'violates PodSecurity "restricted:latest": non-default capabilities' in line


def test_kube_cluster_without_ephemeral_containers(app: KubeCli) -> None:
    app.cluster.serve_ephemeral = False
    line, _ = timed(app, "exec", "--ephemeral-container", "--target", "pod/app", *TRUE)
    assert "this cluster does not serve ephemeral containers" in line
    assert "leave out --ephemeral-container" in line


# -- the agent does not start --
def test_kube_agent_image_that_cannot_be_pulled(app: KubeCli) -> None:
    config = app.config_file("c.yaml", "agent:\n  image: registry.invalid/nope/agent:0\n")
    line, _ = timed(app, "exec", "-f", str(config), "--target", "pod/app", *TRUE)
    assert "the node cannot pull the agent image registry.invalid/nope/agent:0" in line
    assert 'ErrImagePull: Failed to pull image "registry.invalid/nope/agent:0"' in line
    assert "'mirrord-trace agent-image push registry.invalid/nope/agent:0'" in line
    assert "agent.image" in line
    assert_nothing_left(app)


def test_kube_without_an_agent_image_stops_before_asking_the_cluster(app: KubeCli) -> None:
    result = app.run("exec", "--target", "pod/app", *TRUE, MIRRORD_AGENT_IMAGE="")
    line = the_error(result)
    assert "no agent image is set" in line
    assert "'mirrord-trace agent-image push REGISTRY/mirrord-trace-agent:0.1.0'" in line
    assert "agent.image or MIRRORD_AGENT_IMAGE" in line
    assert app.cluster.requests == []


def test_kube_agent_start_up_timeout(app: KubeCli) -> None:
    config = app.config_file(
        "c.json", json.dumps({"agent": {"image": HANGING_IMAGE, "startup_timeout": 3}})
    )
    line, elapsed = timed(app, "exec", "-f", str(config), "--target", "pod/app", *TRUE)
    assert "the agent was not ready within 3 s (last state: agent pod" in line
    assert "ContainerCreating" in line and "agent.startup_timeout" in line
    assert 3 <= elapsed < 15
    assert_nothing_left(app)


def test_kube_agent_that_fails_shows_its_own_error(kube: KubeCli) -> None:
    # The pod status names a container no process on the node belongs to.
    kube.cluster.add_pod("ghost", ["app"])
    line, _ = timed(kube, "exec", "--target", "pod/ghost", *TRUE)
    assert "exited with code 1: mirrord-trace agent: no process on this node belongs to" in line
    assert_nothing_left(kube)


# -- no such target --
@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--target", "pod/nope"], "pod nope not found in namespace default"),
        (["--target", "deployment/nope"], "deployment nope not found in namespace default"),
        (["-n", "elsewhere", "--target", "pod/app"], "pod app not found in namespace elsewhere"),
        (
            ["--target", "pod/app/container/db"],
            "pod app has no container named db (its containers: app)",
        ),
        (
            ["--target", "pod/multi"],
            "pod multi has several containers (web, worker) and the "
            "target names none (name one: --target pod/multi/container/web)",
        ),
        (["--target", "pod/starting"], "pod starting in namespace default is Pending, not running"),
        (
            ["--target", "deployment/idle"],
            "deployment idle in namespace default has no running "
            "pod (0 pod(s) match its selector app=idle)",
        ),
    ],
)
def test_kube_no_such_target(kube: KubeCli, args: list[str], fragment: str) -> None:
    kube.cluster.add_pod("app", ["app"])
    kube.cluster.add_pod("multi", ["web", "istio-proxy", "worker"])
    kube.cluster.add_pod("starting", ["app"], phase="Pending")
    kube.cluster.add_deployment("idle", {"app": "idle"}, ready=0)
    line, elapsed = timed(kube, "exec", *args, *TRUE)
    assert fragment in line
    assert elapsed < 10
    assert not kube.cluster.objects("Job")


# -- ls --
def test_kube_ls_lists_what_can_be_targeted(kube: KubeCli) -> None:
    kube.cluster.add_pod("app", ["app"])
    kube.cluster.add_pod("multi", ["web", "istio-proxy", "worker"])
    kube.cluster.add_pod("starting", ["app"], phase="Pending")
    kube.cluster.add_deployment("shop", {"app": "app"})
    kube.cluster.add_deployment("idle", {"app": "idle"}, ready=0)
    kube.cluster.add_namespace("prod")
    kube.cluster.add_pod("api", ["api"], namespace="prod")
    expected = [
        "pod/app",
        "pod/multi/container/web",
        "pod/multi/container/worker",
        "deployment/shop",
    ]
    result = kube.run("ls")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == expected
    result = kube.run("ls", "-o", "json")
    assert json.loads(result.stdout) == expected
    result = kube.run("ls", "-n", "prod", "-o", "json")
    assert json.loads(result.stdout) == ["pod/api"]
    result = kube.run("ls", "-n", "empty")
    assert (result.returncode, result.stdout) == (0, "")


def test_kube_ls_without_permission(kube: KubeCli) -> None:
    kube.cluster.rbac_rules = []
    assert "not allowed to list pods in namespace default" in the_error(kube.run("ls"))
    result = kube.run("ls", "-o", "yaml")
    assert "'yaml'" in the_error(result, status=2)
