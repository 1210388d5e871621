"""`mirrord-trace ls`: the targets a user can pick in a namespace, in the --target syntax."""

from __future__ import annotations

from mirrord_trace.kube.cluster import Cluster, core_path, group_path
from mirrord_trace.kube.errors import Action, Forbidden
from mirrord_trace.kube.targets import candidate_containers, is_running


def list_targets(cluster: Cluster, namespace: str) -> list[str]:
    """Running pods (`pod/NAME`, and `pod/NAME/container/C` when it has several containers
    besides mesh sidecars), then deployments with a ready pod. Deployments are left out
    when the user may not list them (pods are enough to pick a target)."""
    pods = cluster.call(Action("list", "pods", namespace), "GET", core_path(namespace, "pods"))[
        "items"
    ]
    targets: list[str] = []
    for pod in sorted(pods, key=lambda pod: pod["metadata"]["name"]):
        if not is_running(pod):
            continue
        name = pod["metadata"]["name"]
        containers = candidate_containers(pod)
        if len(containers) == 1:
            targets.append(f"pod/{name}")
        else:
            targets.extend(f"pod/{name}/container/{container}" for container in containers)
    try:
        deployments = cluster.call(
            Action("list", "deployments.apps", namespace),
            "GET",
            group_path("apps/v1", namespace, "deployments"),
        )["items"]
    except Forbidden:
        deployments = []
    targets.extend(
        f"deployment/{deployment['metadata']['name']}"
        for deployment in sorted(deployments, key=lambda d: d["metadata"]["name"])
        if deployment.get("status", {}).get("readyReplicas", 0) > 0
    )
    return targets


def list_namespaces(cluster: Cluster) -> list[str] | None:
    """The cluster's namespaces (for `ls`'s rich output); None when the user may not list
    them (a namespaced role is enough to pick targets)."""
    try:
        found = cluster.call(Action("list", "namespaces", None), "GET", "/api/v1/namespaces")
    except Forbidden:
        return None
    return sorted(item["metadata"]["name"] for item in found["items"])
