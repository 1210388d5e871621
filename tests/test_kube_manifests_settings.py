"""mirrord's `agent` keys reach the agent's Job: from a configuration file to a manifest that
validates against the upstream Kubernetes schema (kubernetes-validate, strict)."""

from __future__ import annotations

from typing import Any

import pytest

from mirrord_trace.config import ConfigError, parse_config
from mirrord_trace.kube.manifests import (
    AgentLaunch,
    agent_job,
    ephemeral_agent_container,
    new_agent_name,
)
from mirrord_trace.kube.targets import ResolvedTarget
from tests.kube_standin.cluster import schema_problem

TARGET = ResolvedTarget("shop", "app-7d9f8", "uid-1", "node-3", "app", "containerd://" + "ab" * 32)
AGENT = {
    "labels": {"team": "payments", "app.kubernetes.io/name": "not-ours"},
    "annotations": {"cats.io/inject": "enabled", "linkerd.io/inject": "enabled"},
    "tolerations": [
        {"key": "meow", "operator": "Exists", "effect": "NoSchedule"},
        {
            "key": "zone",
            "operator": "Equal",
            "value": "a",
            "tolerationSeconds": 30,
            "effect": "NoExecute",
        },
    ],
    "resources": {
        "requests": {"cpu": "100m", "memory": "64Mi"},
        "limits": {"cpu": 2, "memory": "1Gi"},
    },
    "priority_class": "high-priority",
    "service_account": "mirrord-agent",
    "image_pull_secrets": [{"name": "registry-login"}],
    "security_context": {
        "seccomp_profile": {"type": "Localhost", "localhost_profile": "profiles/agent.json"},
        "app_armor_profile": {"type": "RuntimeDefault"},
    },
    "disabled_capabilities": ["SYS_ADMIN"],
}


def launch_from(agent: dict[str, Any]) -> AgentLaunch:
    settings = parse_config({"agent": agent}).agent
    return AgentLaunch(
        name=new_agent_name(), namespace="shop", target=TARGET, image="reg/agent:1",
        image_pull_policy="IfNotPresent", port=23456, token="f" * 64, ttl=1, privileged=False,
        idle_ttl=30, settings=settings,
    )  # fmt: skip


def test_agent_pod_keys_reach_the_job_and_it_validates() -> None:
    job = agent_job(launch_from(AGENT))
    assert schema_problem(job, "Job") is None
    pod = job["spec"]["template"]
    spec = pod["spec"]
    for metadata in (job["metadata"], pod["metadata"]):
        assert metadata["labels"]["team"] == "payments"
        # Ours win: they are how the agent's objects are found, and keep meshes out.
        assert metadata["labels"]["app.kubernetes.io/name"] == "mirrord-trace-agent"
        assert metadata["annotations"]["cats.io/inject"] == "enabled"
        assert metadata["annotations"]["linkerd.io/inject"] == "disabled"
    assert spec["tolerations"] == [
        {"key": "meow", "operator": "Exists", "effect": "NoSchedule"},
        {
            "key": "zone",
            "operator": "Equal",
            "value": "a",
            "tolerationSeconds": 30,
            "effect": "NoExecute",
        },
    ]
    container = spec["containers"][0]
    assert container["resources"] == {
        "requests": {"cpu": "100m", "memory": "64Mi"},
        "limits": {"cpu": "2", "memory": "1Gi"},
    }
    assert (spec["priorityClassName"], spec["serviceAccountName"]) == (
        "high-priority",
        "mirrord-agent",
    )
    assert spec["imagePullSecrets"] == [{"name": "registry-login"}]
    assert spec["securityContext"] == {
        "seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/agent.json"},
        "appArmorProfile": {"type": "RuntimeDefault"},
    }
    assert container["securityContext"]["capabilities"] == {"add": ["NET_ADMIN", "SYS_PTRACE"]}


def test_defaults_keep_the_agent_tolerant_and_bounded() -> None:
    spec = agent_job(launch_from({}))["spec"]["template"]["spec"]
    assert spec["tolerations"] == [{"operator": "Exists"}]
    assert "priorityClassName" not in spec and "imagePullSecrets" not in spec
    # An empty list is no tolerations at all, as in mirrord.
    spec = agent_job(launch_from({"tolerations": []}))["spec"]["template"]["spec"]
    assert spec["tolerations"] == []


def test_the_ephemeral_agent_takes_the_capability_keys_and_validates() -> None:
    container = ephemeral_agent_container(launch_from(AGENT))
    assert schema_problem(container, "EphemeralContainer") is None
    assert container["securityContext"]["capabilities"] == {"add": ["NET_ADMIN", "SYS_PTRACE"]}


@pytest.mark.parametrize(
    ("agent", "key", "fragment"),
    [
        ({"labels": {"bad key!": "x"}}, "agent.labels", "is not a Kubernetes key"),
        ({"labels": {"team": "has space"}}, "agent.labels.team", "is not a label value"),
        ({"tolerations": [{"operator": "Maybe"}]}, "agent.tolerations.operator", "Exists, Equal"),
        ({"tolerations": [{"efect": "NoSchedule"}]}, "agent.tolerations.efect", "unknown key"),
        ({"resources": {"limits": {"cpu": True}}}, "agent.resources.limits.cpu", "quantity"),
        ({"image_pull_secrets": ["registry-login"]}, "agent.image_pull_secrets", "mapping"),
        (
            {"security_context": {"seccomp_profile": {"type": "Localhost"}}},
            "agent.security_context.seccomp_profile.localhost_profile",
            "not a string",
        ),
        ({"disabled_capabilities": ["CHOWN"]}, "agent.disabled_capabilities", "NET_ADMIN"),
    ],
)
def test_bad_agent_pod_values_are_one_line_errors(
    agent: dict[str, Any], key: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"agent": agent})
    assert caught.value.key == key and fragment in str(caught.value)
