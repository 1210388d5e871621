"""What can go wrong with a Kubernetes target, as one message and one hint per failure kind.

The API server explains a refusal in a Status object (`kind: Status`, `reason`, `message`,
`details`); we keep its message (it names the user and the resource) and add what to do.
Each kind is its own class, so callers and tests can tell them apart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

DOCS = "docs/kubernetes.md"
_SINGULAR = {"pods": "pod", "deployments.apps": "deployment", "jobs.batch": "job"}


class KubeError(Exception):
    """A problem with a Kubernetes target; `message` says what is wrong, `hint` what to do."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class NoKubeconfig(KubeError):
    """No kubeconfig (and not inside a cluster), or it cannot be used."""


class ClusterUnreachable(KubeError):
    """The API server does not answer."""


class Unauthorized(KubeError):
    """401: the API server does not accept the credentials."""


class Forbidden(KubeError):
    """403 from RBAC: the user may not do `verb` on `resource`."""


class PodSecurityRejected(KubeError):
    """Pod security admission refused the agent pod (or ephemeral container)."""


class TargetNotFound(KubeError):
    """The pod, deployment or container named as the target does not exist."""


class TargetNotRunning(KubeError):
    """The target exists but has no running container to attach to."""


class ContainerChoiceNeeded(KubeError):
    """A pod with several containers, none named in the target."""


class ImagePullFailed(KubeError):
    """The node cannot pull the agent image."""


class NoAgentImage(KubeError):
    """Neither agent.image nor MIRRORD_AGENT_IMAGE names the agent image."""


class AgentStartTimeout(KubeError):
    """The agent was not ready within agent.startup_timeout."""


class AgentFailed(KubeError):
    """The agent pod or container failed (crashed, evicted, rejected by the node...)."""


class EphemeralUnsupported(KubeError):
    """The cluster does not serve the pods/ephemeralcontainers subresource."""


class ApiFailure(KubeError):
    """Any other error answer of the API server."""


@dataclass(frozen=True, slots=True)
class Action:
    """What we were doing when the API server answered: for messages and RBAC hints."""

    verb: str
    resource: str  # as RBAC names it: "pods", "jobs.batch", "pods/portforward"...
    namespace: str | None
    name: str | None = None

    def describe(self) -> str:
        where = f" in namespace {self.namespace}" if self.namespace else ""
        return f"{self.verb} {self.resource}{where}"


def status_object(body: str | bytes | None) -> dict[str, Any]:
    """The Status object of an error answer ({} when the body is not one)."""
    if not body:
        return {}
    try:
        status = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return {}
    return status if isinstance(status, dict) and status.get("kind") == "Status" else {}


def from_api_answer(code: int, body: str | bytes | None, action: Action, context: str) -> KubeError:
    """An error answer (HTTP status `code`, Status object in `body`) -> the matching KubeError.

    `context` names the kubeconfig context (or "in-cluster") for credential hints.
    """
    status = status_object(body)
    message = str(status.get("message") or "").strip()
    if not message:
        text = body.decode(errors="replace") if isinstance(body, bytes) else (body or "")
        message = " ".join(text.split())[:300] or f"HTTP {code}"
    if code == 401:
        return Unauthorized(
            f"the Kubernetes API server did not accept the credentials of context {context} "
            f"({message})",
            "log in to the cluster again or refresh the kubeconfig's credentials",
        )
    if code == 403 and "violates PodSecurity" in message:
        return pod_security_rejected(message, action.namespace)
    if code == 403:
        return Forbidden(
            f"not allowed to {action.describe()}: {message}",
            f"ask a cluster admin for a Role that grants '{action.verb}' on "
            f"'{action.resource}' (the minimal Role is in {DOCS})",
        )
    if code == 404:
        kind = _SINGULAR.get(action.resource, action.resource)
        what = f"{kind} {action.name}" if action.name else action.resource
        where = f" in namespace {action.namespace}" if action.namespace else ""
        return TargetNotFound(
            f"{what} not found{where}",
            "check the name and the namespace (-n); 'mirrord-trace ls' lists the targets",
        )
    if code >= 500:
        return ApiFailure(
            f"the Kubernetes API server failed to {action.describe()} ({code}: {message})",
            "try again; if it persists, check the cluster's health",
        )
    return ApiFailure(
        f"the Kubernetes API server refused to {action.describe()} ({code}: {message})",
        f"this looks like a bug or an unusual cluster policy; see {DOCS}",
    )


def pod_security_rejected(message: str, namespace: str | None) -> PodSecurityRejected:
    where = f"namespace {namespace}" if namespace else "the namespace"
    return PodSecurityRejected(
        f"pod security admission rejected the agent in {where}: {message}",
        "the agent needs hostPID and the NET_ADMIN, SYS_PTRACE and SYS_ADMIN capabilities: "
        f"label {where} pod-security.kubernetes.io/enforce=privileged, or set agent.namespace "
        "to a namespace that allows it",
    )
