"""Reading the agent's progress from a pod's status: running, still waiting (for what), or
failed (and why). Pure functions of the pod JSON, shared by the agent Job's pod and the
ephemeral container (whose status is in ephemeralContainerStatuses)."""

from __future__ import annotations

from typing import Any

from mirrord_trace.kube.errors import (
    DOCS,
    AgentFailed,
    KubeError,
    pod_security_rejected,
)
from mirrord_trace.kube.image import pull_failed

# Waiting reasons of a container that will not start without someone changing something.
IMAGE_PULL_FAILURES = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "RegistryUnavailable",
        "SignatureValidationFailed",
    }
)
CONTAINER_FAILURES = frozenset(
    {
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
        "CrashLoopBackOff",
        "PreCreateHookError",
        "PreStartHookError",
    }
)


def container_status(
    pod: dict[str, Any], container: str, statuses: str = "containerStatuses"
) -> dict[str, Any]:
    return next(
        (s for s in pod.get("status", {}).get(statuses, []) if s.get("name") == container), {}
    )


def agent_progress(
    pod: dict[str, Any] | None,
    container: str,
    image: str,
    statuses: str = "containerStatuses",
) -> str | None:
    """None once the agent container runs; else what it is waiting for. Raises a KubeError
    (ImagePullFailed, AgentFailed) when it will not start."""
    if pod is None:
        return "waiting for the agent pod to be created"
    name = pod["metadata"]["name"]
    namespace = pod["metadata"].get("namespace", "")
    logs_hint = f"see 'kubectl -n {namespace} logs {name} -c {container}'"
    state = container_status(pod, container, statuses).get("state", {})
    if "running" in state:
        return None
    if "terminated" in state:
        ended = state["terminated"]
        detail = " ".join(str(ended.get("message") or ended.get("reason") or "").split())
        raise AgentFailed(
            f"the agent in pod {name} exited with code {ended.get('exitCode')}"
            + (f": {detail}" if detail else ""),
            logs_hint,
        )
    waiting = state.get("waiting", {})
    reason, message = waiting.get("reason", ""), " ".join(waiting.get("message", "").split())
    if reason in IMAGE_PULL_FAILURES:
        raise pull_failed(image, reason, message)
    if reason in CONTAINER_FAILURES:
        raise AgentFailed(
            f"the agent container in pod {name} cannot start ({reason}"
            + (f": {message})" if message else ")"),
            logs_hint,
        )
    status = pod.get("status", {})
    phase = status.get("phase", "Pending")
    if phase in ("Failed", "Succeeded") or pod["metadata"].get("deletionTimestamp"):
        why = " ".join(f"{status.get('reason', '')} {status.get('message', '')}".split())
        ending = "is being deleted" if phase not in ("Failed", "Succeeded") else phase.lower()
        raise AgentFailed(
            f"the agent pod {name} {ending}" + (f": {why}" if why else ""),
            f"see 'kubectl -n {namespace} describe pod {name}'",
        )
    if reason:
        return reason
    for condition in status.get("conditions", []):
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return f"not scheduled: {condition.get('message') or condition.get('reason')}"
    return "waiting for the container to start" if phase == "Running" else phase


def failed_create(events: list[dict[str, Any]]) -> str | None:
    """The message of the latest FailedCreate event (the job controller could not create the
    pod: pod security admission, quota, another admission webhook...), if any."""
    failures = [event for event in events if event.get("reason") == "FailedCreate"]
    if not failures:
        return None
    failures.sort(key=lambda event: event.get("lastTimestamp") or "")
    return " ".join(str(failures[-1].get("message", "")).split())


def job_cannot_create_pod(message: str, namespace: str) -> KubeError:
    if "violates PodSecurity" in message:
        return pod_security_rejected(message, namespace)
    return AgentFailed(
        f"the agent's Job cannot create its pod in namespace {namespace}: {message}",
        f"see 'kubectl -n {namespace} describe job' and {DOCS}",
    )
