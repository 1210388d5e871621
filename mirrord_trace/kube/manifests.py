"""The agent's Kubernetes objects: a Job whose pod runs on the target's node, or an ephemeral
container in the target pod. Pure functions of an AgentLaunch; tests validate their output
against the upstream OpenAPI schemas.

Why each setting is there:
- hostPID: the agent finds the target container's process in the node's /proc (by its
  container id) and enters its namespaces; nodeName pins it to the target's node (no scheduler).
- capabilities NET_ADMIN (iptables for stealing), SYS_PTRACE (/proc/<pid>/root, environ, ns),
  SYS_ADMIN (setns) on top of the runtime's defaults; `privileged` only when asked
  (agent.privileged), for clusters whose runtime needs it.
- ttlSecondsAfterFinished: the Job (and its pod) disappear by themselves after the agent exits,
  even when the local side could not delete them; backoffLimit 0: a failed agent is not retried.
- mesh opt-out annotations/labels: an injected istio/linkerd sidecar would intercept the
  agent's port-forwarded traffic and keep the Job from finishing.
- the session token appears only as its SHA-256 (MIRRORD_TRACE_AGENT_TOKEN_SHA256): whoever
  may read pods or Jobs in the namespace learns nothing that lets them connect to the agent.
- terminationMessagePolicy FallbackToLogsOnError: when the agent fails, its last log lines
  (its one-line error) appear in the pod status, so the local side can show them.

The user's agent settings (mirrord's keys, AgentLaunch.settings) come on top: labels and
annotations (ours win on a clash: they are how the agent's objects are found and kept out of
meshes), tolerations and resources (replacing ours), priority class, service account, image
pull secrets, the pod's seccomp/AppArmor profiles, and capabilities left out.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mirrord_trace.config.model import AGENT_CAPABILITIES, AgentConfig
from mirrord_trace.kube.targets import ResolvedTarget
from mirrord_trace.protocol.handshake import token_digest

AGENT_CONTAINER = "mirrord-trace-agent"
TOKEN_SHA256_ENV = "MIRRORD_TRACE_AGENT_TOKEN_SHA256"
MANAGED_BY = {
    "app.kubernetes.io/name": AGENT_CONTAINER,
    "app.kubernetes.io/managed-by": "mirrord-trace",
}
# Label form (istio >= 1.10, preferred) and annotation form of the sidecar opt-outs.
MESH_OPT_OUT_LABELS = {"sidecar.istio.io/inject": "false"}
MESH_OPT_OUT_ANNOTATIONS = {
    "sidecar.istio.io/inject": "false",
    "linkerd.io/inject": "disabled",
    "kuma.io/sidecar-injection": "disabled",
}
AGENT_RESOURCES = {
    "requests": {"cpu": "10m", "memory": "50Mi"},
    "limits": {"cpu": "1", "memory": "512Mi"},
}
_NAME_ALPHABET = string.ascii_lowercase + string.digits


def new_agent_name() -> str:
    """A fresh object name: the prefix says what it is, the suffix makes it unique."""
    return f"{AGENT_CONTAINER}-" + "".join(secrets.choice(_NAME_ALPHABET) for _ in range(10))


@dataclass(frozen=True, slots=True)
class AgentLaunch:
    """Everything that goes into the agent's manifest."""

    name: str  # Job name, or ephemeral container name
    namespace: str  # where the Job is created (the ephemeral container lives in the target's)
    target: ResolvedTarget
    image: str
    image_pull_policy: str
    port: int  # the agent listens on 127.0.0.1:port in its pod's network namespace
    token: str  # stays on this side: the manifest carries only its digest
    ttl: int  # ttlSecondsAfterFinished
    privileged: bool
    idle_ttl: int  # the agent exits after this many seconds without a client
    # The pod keys of the `agent` section (labels, tolerations, ...).
    settings: AgentConfig = field(default_factory=AgentConfig)

    def command(self) -> list[str]:
        return [
            *("python3", "-m", "agent", "--container-id", self.target.container_id),
            *("--listen", f"127.0.0.1:{self.port}", "--idle-ttl", str(self.idle_ttl)),
        ]

    def labels(self) -> dict[str, str]:
        return {
            **self.settings.labels,
            **MANAGED_BY,
            **MESH_OPT_OUT_LABELS,
            "mirrord-trace/target-pod": self.target.pod,
        }

    def annotations(self) -> dict[str, str]:
        return {**self.settings.annotations, **MESH_OPT_OUT_ANNOTATIONS}


def _security_context(launch: AgentLaunch) -> dict[str, Any]:
    context: dict[str, Any] = {
        "capabilities": {
            "add": [
                name
                for name in AGENT_CAPABILITIES
                if name not in launch.settings.disabled_capabilities
            ]
        },
        # The target pod (for an ephemeral container) may demand non-root; the agent is root.
        "runAsUser": 0,
        "runAsNonRoot": False,
    }
    if launch.privileged:
        context["privileged"] = True
    return context


def _container_base(launch: AgentLaunch) -> dict[str, Any]:
    return {
        "image": launch.image,
        "imagePullPolicy": launch.image_pull_policy,
        "command": launch.command(),
        "env": [{"name": TOKEN_SHA256_ENV, "value": token_digest(launch.token)}],
        "securityContext": _security_context(launch),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def agent_job(launch: AgentLaunch) -> dict[str, Any]:
    """batch/v1 Job running the agent on the target's node."""
    settings = launch.settings
    metadata = {
        "name": launch.name,
        "namespace": launch.namespace,
        "labels": launch.labels(),
        "annotations": launch.annotations(),
    }
    tolerations = (
        [dict(toleration) for toleration in settings.tolerations]
        if settings.tolerations is not None
        else [{"operator": "Exists"}]
    )
    resources = _plain(settings.resources) if settings.resources is not None else AGENT_RESOURCES
    pod_spec: dict[str, Any] = {
        "nodeName": launch.target.node,
        "hostPID": True,
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 5,
        # Whatever taints the target's node has, the agent must run there (by default).
        "tolerations": tolerations,
        "containers": [
            {"name": AGENT_CONTAINER, **_container_base(launch), "resources": resources}
        ],
    }
    if settings.priority_class is not None:
        pod_spec["priorityClassName"] = settings.priority_class
    if settings.service_account is not None:
        pod_spec["serviceAccountName"] = settings.service_account
    if settings.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": name} for name in settings.image_pull_secrets]
    if settings.security_context:
        pod_spec["securityContext"] = _plain(settings.security_context)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "ttlSecondsAfterFinished": launch.ttl,
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": launch.labels(), "annotations": launch.annotations()},
                "spec": pod_spec,
            },
        },
    }


def ephemeral_agent_container(launch: AgentLaunch) -> dict[str, Any]:
    """core/v1 EphemeralContainer running the agent inside the target pod; it shares the
    target container's process namespace (targetContainerName) and the pod's network."""
    return {
        "name": launch.name,
        **_container_base(launch),
        "targetContainerName": launch.target.container,
    }


def ephemeral_containers_patch(launch: AgentLaunch) -> dict[str, Any]:
    """Strategic merge patch for the pods/ephemeralcontainers subresource (merge key: name)."""
    return {"spec": {"ephemeralContainers": [ephemeral_agent_container(launch)]}}


def _plain(value: Any) -> Any:
    """The configuration's read-only mappings as plain dicts (for the API client)."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value
