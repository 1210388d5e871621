"""The agent as an ephemeral container in the target pod (agent.ephemeral,
--ephemeral-container): no Job and no hostPID; it shares the target container's processes
and the pod's network. Ephemeral containers cannot be removed: the agent exits on its own
when the session ends, and its (terminated) entry stays in the pod spec until the pod goes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mirrord_trace.kube.cluster import Cluster, core_path
from mirrord_trace.kube.errors import (
    Action,
    EphemeralUnsupported,
    TargetNotFound,
)
from mirrord_trace.kube.manifests import AgentLaunch, ephemeral_containers_patch
from mirrord_trace.kube.pod_state import agent_progress
from mirrord_trace.kube.pod_watch import wait_for_pod

STRATEGIC_MERGE = "application/strategic-merge-patch+json"


class EphemeralAgent:
    def __init__(self, cluster: Cluster, launch: AgentLaunch) -> None:
        self.cluster = cluster
        self.launch = launch

    @property
    def namespace(self) -> str:
        return self.launch.target.namespace

    def describe(self) -> str:
        return f"ephemeral container {self.launch.name} in pod {self.launch.target.pod}"

    def start(self) -> None:
        pod = self.launch.target.pod
        try:
            self.cluster.call(
                Action("patch", "pods/ephemeralcontainers", self.namespace, pod),
                "PATCH",
                core_path(self.namespace, "pods", pod, "ephemeralcontainers"),
                body=ephemeral_containers_patch(self.launch),
                content_type=STRATEGIC_MERGE,
            )
        except TargetNotFound:
            if self._pod_exists():
                raise EphemeralUnsupported(
                    "this cluster does not serve ephemeral containers "
                    "(pods/ephemeralcontainers: not found)",
                    "leave out --ephemeral-container (agent.ephemeral) to run the agent as a Job",
                ) from None
            raise

    def _pod_exists(self) -> bool:
        try:
            self.cluster.call(
                Action("get", "pods", self.namespace, self.launch.target.pod),
                "GET",
                core_path(self.namespace, "pods", self.launch.target.pod),
            )
        except TargetNotFound:
            return False
        return True

    def wait_until_running(self, timeout: float, progress: Callable[[str], None]) -> str:
        def evaluate(pod: dict[str, Any] | None) -> str | None:
            state = agent_progress(
                pod, self.launch.name, self.launch.image, "ephemeralContainerStatuses"
            )
            return None if state is None else f"ephemeral agent container: {state}"

        wait_for_pod(
            self.cluster,
            self.namespace,
            evaluate=evaluate,
            timeout=timeout,
            progress=progress,
            field_selector=f"metadata.name={self.launch.target.pod}",
            describe_hint=f"look at 'kubectl -n {self.namespace} describe pod "
            f"{self.launch.target.pod}'",
        )
        return self.launch.target.pod

    def check_running(self, pod: str) -> None:
        """Raise why the ephemeral agent stopped, if it did."""
        found = self.cluster.call(
            Action("get", "pods", self.namespace, pod),
            "GET",
            core_path(self.namespace, "pods", pod),
        )
        agent_progress(found, self.launch.name, self.launch.image, "ephemeralContainerStatuses")

    def remove(self) -> str | None:
        return None  # cannot be removed; the agent exits when its session ends
