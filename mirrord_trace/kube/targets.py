"""From `pod/NAME`, `deployment/NAME` or `rollout/NAME` (each with an optional `/container/C`)
to one running container: its pod, node and container id (what the agent needs to find it on
the node)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mirrord_trace.kube.cluster import Cluster, core_path, group_path
from mirrord_trace.kube.errors import (
    Action,
    ContainerChoiceNeeded,
    TargetNotFound,
    TargetNotRunning,
)
from mirrord_trace.targets import (
    DeploymentTarget,
    KubernetesTarget,
    PodTarget,
    RolloutTarget,
    WorkloadTarget,
)

# Service-mesh and secret sidecars that are never what the user means when a pod has them
# next to the application container.
MESH_SIDECARS = frozenset(
    {
        *("istio-proxy", "istio-init", "linkerd-proxy", "linkerd-init"),
        *("vault-agent", "vault-agent-init"),
    }
)
LS_HINT = "'mirrord-trace ls -n NAMESPACE' lists the targets you can pick"


@dataclass(frozen=True, slots=True)
class ResolvedTarget:
    namespace: str
    pod: str
    pod_uid: str
    node: str
    container: str
    container_id: str  # as the pod status gives it: "containerd://<64 hex digits>"

    def __str__(self) -> str:
        return f"pod/{self.pod}/container/{self.container}"


@dataclass(frozen=True, slots=True)
class WorkloadKind:
    """Where a kind of workload lives in the API, and how a user looks at it."""

    kind: str  # as targets and messages name it
    resource: str  # as RBAC names it
    api: str  # group/version
    plural: str


WORKLOAD_KINDS: dict[type, WorkloadKind] = {
    DeploymentTarget: WorkloadKind("deployment", "deployments.apps", "apps/v1", "deployments"),
    # Argo Rollouts: a custom resource; its pods carry the labels of spec.selector, or of the
    # Deployment that spec.workloadRef names.
    RolloutTarget: WorkloadKind("rollout", "rollouts.argoproj.io", "argoproj.io/v1alpha1",
                                "rollouts"),
}


def resolve(cluster: Cluster, target: KubernetesTarget, namespace: str) -> ResolvedTarget:
    if isinstance(target, PodTarget):
        pod = cluster.call(
            Action("get", "pods", namespace, target.name),
            "GET",
            core_path(namespace, "pods", target.name),
        )
    else:
        pod = running_pod_of_workload(cluster, target, namespace)
    return choose_container(pod, target.container)


def _workload(cluster: Cluster, kind: WorkloadKind, name: str, namespace: str) -> dict[str, Any]:
    return cluster.call(
        Action("get", kind.resource, namespace, name),
        "GET",
        group_path(kind.api, namespace, kind.plural, name),
    )


def workload_selector(
    cluster: Cluster, kind: WorkloadKind, workload: dict[str, Any], namespace: str
) -> dict[str, Any]:
    """The label selector of a workload's pods."""
    spec = workload.get("spec", {})
    reference = spec.get("workloadRef")
    if "selector" not in spec and reference and reference.get("kind") == "Deployment":
        referenced = _workload(
            cluster, WORKLOAD_KINDS[DeploymentTarget], reference["name"], namespace
        )
        spec = referenced.get("spec", {})
    if "selector" not in spec:
        raise TargetNotFound(
            f"{kind.kind} {workload['metadata']['name']} in namespace {namespace} has no pod "
            "selector",
            f"give it spec.selector (or spec.workloadRef to a Deployment); {LS_HINT}",
        )
    return spec["selector"]


def running_pod_of_workload(
    cluster: Cluster, target: WorkloadTarget, namespace: str
) -> dict[str, Any]:
    kind = WORKLOAD_KINDS[type(target)]
    workload = _workload(cluster, kind, target.name, namespace)
    selector = label_selector(workload_selector(cluster, kind, workload, namespace))
    pods = cluster.call(
        Action("list", "pods", namespace),
        "GET",
        core_path(namespace, "pods"),
        query={"labelSelector": selector},
    )["items"]
    running = [pod for pod in pods if is_running(pod)]
    if not running:
        raise TargetNotRunning(
            f"{kind.kind} {target.name} in namespace {namespace} has no running pod "
            f"({len(pods)} pod(s) match its selector {selector})",
            f"check it with 'kubectl -n {namespace} get {kind.plural},pods'; {LS_HINT}",
        )
    # Ready pods first; then a stable choice, so repeated runs pick the same pod.
    running.sort(key=lambda pod: (not is_ready(pod), pod["metadata"]["name"]))
    return running[0]


def label_selector(selector: dict[str, Any]) -> str:
    """A LabelSelector object -> its string form (`a=b,c in (d,e),!f`)."""
    terms = [f"{key}={value}" for key, value in sorted(selector.get("matchLabels", {}).items())]
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        values = ",".join(expression.get("values", []))
        terms.append(
            {
                "In": f"{key} in ({values})",
                "NotIn": f"{key} notin ({values})",
                "Exists": key,
                "DoesNotExist": f"!{key}",
            }[operator]
        )
    return ",".join(terms)


def is_running(pod: dict[str, Any]) -> bool:
    return pod.get("status", {}).get("phase") == "Running" and not pod["metadata"].get(
        "deletionTimestamp"
    )


def is_ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def candidate_containers(pod: dict[str, Any]) -> list[str]:
    """The pod's containers a user may mean, mesh sidecars left out (unless that is all)."""
    names = [container["name"] for container in pod["spec"]["containers"]]
    return [name for name in names if name not in MESH_SIDECARS] or names


def choose_container(pod: dict[str, Any], wanted: str | None) -> ResolvedTarget:
    metadata, spec, status = pod["metadata"], pod["spec"], pod.get("status", {})
    name, namespace = metadata["name"], metadata["namespace"]
    names = [container["name"] for container in spec["containers"]]
    if not is_running(pod):
        state = "being deleted" if metadata.get("deletionTimestamp") else status.get("phase")
        raise TargetNotRunning(
            f"pod {name} in namespace {namespace} is {state}, not running",
            f"wait until it runs, or pick another target; {LS_HINT}",
        )
    if wanted is None:
        candidates = candidate_containers(pod)
        if len(candidates) > 1:
            raise ContainerChoiceNeeded(
                f"pod {name} has several containers ({', '.join(candidates)}) and the target "
                "names none",
                f"name one: --target pod/{name}/container/{candidates[0]}",
            )
        wanted = candidates[0]
    elif wanted not in names:
        raise TargetNotFound(
            f"pod {name} has no container named {wanted} (its containers: {', '.join(names)})",
            f"use pod/{name}/container/C with one of them",
        )
    container_status = next(
        (s for s in status.get("containerStatuses", []) if s["name"] == wanted), {}
    )
    if "running" not in container_status.get("state", {}) or not container_status.get(
        "containerID"
    ):
        state = next(iter(container_status.get("state", {}).values()), {})
        reason = state.get("reason", "not started") if isinstance(state, dict) else "unknown"
        raise TargetNotRunning(
            f"container {wanted} of pod {name} is not running ({reason})",
            f"wait until it runs, or pick another target; {LS_HINT}",
        )
    return ResolvedTarget(
        namespace=namespace,
        pod=name,
        pod_uid=metadata["uid"],
        node=spec["nodeName"],
        container=wanted,
        container_id=container_status["containerID"],
    )
