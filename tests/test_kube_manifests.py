"""The agent's Kubernetes objects validate against the upstream OpenAPI schemas of a current
Kubernetes minor version (strict: unknown fields are errors), for any launch parameters."""

from __future__ import annotations

import json

import kubernetes_validate
from hypothesis import given
from hypothesis import strategies as st

from mirrord_trace.kube.manifests import (
    AGENT_CAPABILITIES,
    AgentLaunch,
    agent_job,
    ephemeral_agent_container,
    ephemeral_containers_patch,
    new_agent_name,
)
from mirrord_trace.kube.targets import ResolvedTarget
from mirrord_trace.protocol import token_digest
from tests.kube_standin.cluster import schema_problem
from tests.kube_standin.schemas import KUBERNETES_VERSION

CONTAINER_ID = "containerd://" + "ab" * 32
TARGET = ResolvedTarget("shop", "app-7d9f8", "uid-1", "node-3", "app", CONTAINER_ID)


def launch(**changes: object) -> AgentLaunch:
    values: dict[str, object] = {
        "name": new_agent_name(),
        "namespace": "shop",
        "target": TARGET,
        "image": "registry.example/mirrord-trace-agent:0.1.0",
        "image_pull_policy": "IfNotPresent",
        "port": 23456,
        "token": "f" * 64,
        "ttl": 1,
        "privileged": False,
        "idle_ttl": 30,
    }
    values.update(changes)
    return AgentLaunch(**values)  # type: ignore[arg-type]


def test_kube_schemas_are_of_a_current_minor_version() -> None:
    assert KUBERNETES_VERSION in kubernetes_validate.utils.all_versions()
    assert tuple(map(int, KUBERNETES_VERSION.split(".")[:2])) >= (1, 33)


def test_kube_agent_job_validates_and_runs_on_the_targets_node_with_hostpid() -> None:
    job = agent_job(launch())
    assert schema_problem(job, "Job") is None
    spec = job["spec"]["template"]["spec"]
    assert (spec["nodeName"], spec["hostPID"], spec["restartPolicy"]) == ("node-3", True, "Never")
    container = spec["containers"][0]
    assert container["securityContext"]["capabilities"] == {"add": list(AGENT_CAPABILITIES)}
    assert "privileged" not in container["securityContext"]
    assert {"requests", "limits"} <= set(container["resources"])
    assert job["spec"]["ttlSecondsAfterFinished"] == 1
    assert job["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
    assert job["spec"]["template"]["metadata"]["annotations"]["linkerd.io/inject"] == "disabled"
    assert container["command"][3:5] == ["--container-id", CONTAINER_ID]
    # The session token is not in the command line (visible in ps on the node).
    assert "f" * 64 not in " ".join(container["command"])


def test_kube_privileged_agent_only_when_asked() -> None:
    job = agent_job(launch(privileged=True))
    assert schema_problem(job, "Job") is None
    assert job["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"]


def test_kube_ephemeral_agent_container_validates_and_targets_the_container() -> None:
    container = ephemeral_agent_container(launch())
    assert schema_problem(container, "EphemeralContainer") is None
    assert container["targetContainerName"] == "app"
    assert "resources" not in container  # not allowed on ephemeral containers


def test_kube_schema_check_can_fail() -> None:
    job = agent_job(launch())
    job["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilitiez"] = {}
    assert "capabilitiez" in (schema_problem(job, "Job") or "")
    job = agent_job(launch())
    job["spec"]["ttlSecondsAfterFinished"] = "soon"
    assert schema_problem(job, "Job") is not None


@given(
    namespace=st.from_regex(r"[a-z]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True),
    pod=st.from_regex(r"[a-z]([-a-z0-9]{0,40}[a-z0-9])?", fullmatch=True),
    image=st.from_regex(
        r"[a-z0-9]{1,10}(\.[a-z]{2,5})?/[a-z0-9_-]{1,20}:[a-z0-9.]{1,8}", fullmatch=True
    ),
    port=st.integers(1024, 65535),
    ttl=st.integers(0, 65535),
    privileged=st.booleans(),
    pull_policy=st.sampled_from(["IfNotPresent", "Always", "Never"]),
)
def test_kube_manifests_validate_for_any_launch(
    namespace: str, pod: str, image: str, port: int, ttl: int, privileged: bool, pull_policy: str
) -> None:
    target = ResolvedTarget(namespace, pod, "uid", "node", "c", CONTAINER_ID)
    chosen = launch(
        namespace=namespace,
        target=target,
        image=image,
        port=port,
        ttl=ttl,
        privileged=privileged,
        image_pull_policy=pull_policy,
    )
    assert schema_problem(agent_job(chosen), "Job") is None
    assert schema_problem(ephemeral_agent_container(chosen), "EphemeralContainer") is None


def test_kube_agent_names_are_valid_and_distinct() -> None:
    names = {new_agent_name() for _ in range(200)}
    assert len(names) == 200
    for name in list(names)[:10]:
        job = agent_job(launch(name=name))
        assert schema_problem(job, "Job") is None
        # The job controller puts the Job's name in a label value: at most 63 characters.
        assert len(name) <= 63


@given(token=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64))
def test_kube_specs_hold_only_the_tokens_digest(token: str) -> None:
    """Whoever may read pods or Jobs in the namespace must not learn the session token (issue
    #20): the specs carry its SHA-256 only, which the agent checks and no client can present."""
    chosen = launch(token=token)
    for manifest in (agent_job(chosen), ephemeral_containers_patch(chosen)):
        text = json.dumps(manifest)
        assert token not in text
        assert token_digest(token) in text
    container = agent_job(chosen)["spec"]["template"]["spec"]["containers"][0]
    assert container["env"] == [
        {"name": "MIRRORD_TRACE_AGENT_TOKEN_SHA256", "value": token_digest(token)}
    ]
