"""The agent as a Job on the target's node: create it, wait for its pod, delete it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mirrord_trace.kube.cluster import Cluster, core_path, group_path
from mirrord_trace.kube.errors import (
    Action,
    ClusterUnreachable,
    Forbidden,
    KubeError,
    TargetNotFound,
)
from mirrord_trace.kube.manifests import AGENT_CONTAINER, AgentLaunch, agent_job
from mirrord_trace.kube.pod_state import agent_progress, failed_create, job_cannot_create_pod
from mirrord_trace.kube.pod_watch import wait_for_pod


class AgentJob:
    """One agent Job. `start()` then `wait_until_running()` -> the pod to port-forward to;
    `remove()` deletes the Job and, through the garbage collector, its pod."""

    def __init__(self, cluster: Cluster, launch: AgentLaunch) -> None:
        self.cluster = cluster
        self.launch = launch
        self.created = False

    @property
    def namespace(self) -> str:
        return self.launch.namespace

    def describe(self) -> str:
        return f"job {self.launch.name} in namespace {self.namespace}"

    def start(self) -> None:
        # Interrupted while the answer is on its way, the Job may exist: remove() must try.
        self.created = True
        try:
            self.cluster.call(
                Action("create", "jobs.batch", self.namespace),
                "POST",
                group_path("batch/v1", self.namespace, "jobs"),
                body=agent_job(self.launch),
            )
        except ClusterUnreachable:
            raise  # no answer: the Job may exist all the same
        except KubeError:
            self.created = False  # the API server said no: there is nothing to remove
            raise

    def wait_until_running(self, timeout: float, progress: Callable[[str], None]) -> str:
        def evaluate(pod: dict[str, Any] | None) -> str | None:
            state = agent_progress(pod, AGENT_CONTAINER, self.launch.image)
            if pod is not None and state is not None:
                return f"agent pod {pod['metadata']['name']}: {state}"
            return state

        pod = wait_for_pod(
            self.cluster,
            self.namespace,
            evaluate=evaluate,
            timeout=timeout,
            progress=progress,
            # The job controller labels its pods job-name=<job> (all Kubernetes versions).
            label_selector=f"job-name={self.launch.name}",
            while_absent=self._explain_missing_pod,
            describe_hint=f"look at 'kubectl -n {self.namespace} describe job {self.launch.name}'",
        )
        return str(pod["metadata"]["name"])

    def check_running(self, pod: str) -> None:
        """Raise why the agent in `pod` stopped, if it did (see pod_state.agent_progress)."""
        found = self.cluster.call(
            Action("get", "pods", self.namespace, pod),
            "GET",
            core_path(self.namespace, "pods", pod),
        )
        agent_progress(found, AGENT_CONTAINER, self.launch.image)

    def _explain_missing_pod(self) -> None:
        """No pod yet: the Job's events say whether the job controller was refused."""
        try:
            events = self.cluster.call(
                Action("list", "events", self.namespace),
                "GET",
                core_path(self.namespace, "events"),
                query={
                    "fieldSelector": (
                        f"involvedObject.kind=Job,involvedObject.name={self.launch.name}"
                    )
                },
            )["items"]
        except Forbidden:
            return  # reading events is optional; the wait goes on until the timeout
        message = failed_create(events)
        if message is not None:
            raise job_cannot_create_pod(message, self.namespace)

    def remove(self) -> str | None:
        """Delete the Job and its pod (Background propagation: through the API the default
        for Jobs is to orphan the pod). -> a warning when it could not be deleted."""
        if not self.created:
            return None
        self.created = False
        try:
            self.cluster.call(
                Action("delete", "jobs.batch", self.namespace, self.launch.name),
                "DELETE",
                group_path("batch/v1", self.namespace, "jobs", self.launch.name),
                query={"propagationPolicy": "Background"},
            )
        except TargetNotFound:
            return None  # already gone
        except KubeError as error:
            return (
                f"could not delete the agent {self.describe()} ({error.message}); it removes "
                f"itself {self.launch.ttl} s after the agent exits"
            )
        return None
