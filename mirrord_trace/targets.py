"""Target strings: what `--target` and the config's `target.path` name.

The vocabulary is mirrord's (`targetless`, `pod/NAME[/container/C]`,
`deployment/NAME[/container/C]`) plus `pid/N`, a process on this machine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


class TargetParseError(ValueError):
    """A target string or mapping that names no target we know; the message says why."""


@dataclass(frozen=True, slots=True)
class Targetless:
    """No target: the program runs with the local environment, no agent is started."""

    def __str__(self) -> str:
        return "targetless"


@dataclass(frozen=True, slots=True)
class PidTarget:
    """A process on this machine; the agent runs locally in its namespaces."""

    pid: int

    def __str__(self) -> str:
        return f"pid/{self.pid}"


@dataclass(frozen=True, slots=True)
class PodTarget:
    """A Kubernetes pod, optionally one container of it."""

    name: str
    container: str | None = None

    def __str__(self) -> str:
        return _with_container(f"pod/{self.name}", self.container)


@dataclass(frozen=True, slots=True)
class DeploymentTarget:
    """A Kubernetes deployment: one of its pods is chosen when the session starts."""

    name: str
    container: str | None = None

    def __str__(self) -> str:
        return _with_container(f"deployment/{self.name}", self.container)


@dataclass(frozen=True, slots=True)
class RolloutTarget:
    """An Argo Rollout (argoproj.io/v1alpha1): one of its pods is chosen when the session
    starts, as for a deployment."""

    name: str
    container: str | None = None

    def __str__(self) -> str:
        return _with_container(f"rollout/{self.name}", self.container)


# A workload whose pods a label selector finds (one running pod is picked).
WorkloadTarget = DeploymentTarget | RolloutTarget
Target = Targetless | PidTarget | PodTarget | DeploymentTarget | RolloutTarget
KubernetesTarget = PodTarget | DeploymentTarget | RolloutTarget

TARGET_FORMS = (
    "targetless, pid/N, pod/NAME[/container/C], deployment/NAME[/container/C], "
    "rollout/NAME[/container/C]"
)

# mirrord knows these kinds; naming them lets us say "not supported" rather than "unknown".
_MIRRORD_ONLY_KINDS = frozenset({"job", "cronjob", "statefulset", "service", "replicaset"})
_WORKLOAD_KINDS = {"deployment": DeploymentTarget, "deploy": DeploymentTarget,
                   "rollout": RolloutTarget}
# Kubernetes object names are DNS-1123 subdomains, container names DNS-1123 labels. Compiled
# on first use (re caches them): most runs never name a pod, and start-up is benchmarked.
_OBJECT_NAME = r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?"
_CONTAINER_NAME = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"


def parse_target(text: str) -> Target:
    """Parse `targetless`, `pid/N`, or `KIND/NAME[/container/C]` for pod, deployment, rollout.

    `deploy/` is accepted for `deployment/`, as mirrord does.
    """
    if text == "targetless":
        return Targetless()
    kind, _, rest = text.partition("/")
    if kind == "pid":
        return PidTarget(_parse_pid(rest, text))
    if kind == "pod" or kind in _WORKLOAD_KINDS:
        name, container = _split_name_and_container(kind, rest, text)
        if kind == "pod":
            return PodTarget(name, container)
        return _WORKLOAD_KINDS[kind](name, container)
    if kind in _MIRRORD_ONLY_KINDS:
        raise TargetParseError(f"{kind} targets are not supported by mirrord-trace ({text!r})")
    raise TargetParseError(f"{text!r} is not a target of a known kind")


def target_from_mapping(value: dict[str, object]) -> Target:
    """mirrord's long form of a path: `{"pod": NAME, "container": C}` (or `deployment`,
    `rollout`)."""
    kinds = [key for key in ("pod", "deployment", "rollout", "pid") if key in value]
    extra = sorted(set(value) - {"pod", "deployment", "rollout", "pid", "container"})
    if len(kinds) != 1 or extra:
        raise TargetParseError(
            f"{value!r} must have exactly one of pod, deployment, rollout, pid (and optionally "
            "container)"
        )
    kind = kinds[0]
    name = value[kind]
    container = value.get("container")
    if kind == "pid":
        if container is not None:
            raise TargetParseError("a pid target has no container")
        return parse_target(f"pid/{name}")
    if not isinstance(name, str) or (container is not None and not isinstance(container, str)):
        raise TargetParseError(f"{value!r}: names must be strings")
    text = f"{kind}/{name}" + (f"/container/{container}" if container is not None else "")
    return parse_target(text)


def _parse_pid(rest: str, text: str) -> int:
    if not rest.isascii() or not rest.isdigit() or int(rest) <= 0:
        raise TargetParseError(f"{text!r}: the pid must be a positive integer")
    return int(rest)


def _split_name_and_container(kind: str, rest: str, text: str) -> tuple[str, str | None]:
    parts = rest.split("/")
    if len(parts) == 1:
        name, container = parts[0], None
    elif len(parts) == 3 and parts[1] == "container":
        name, container = parts[0], parts[2]
    else:
        raise TargetParseError(f"{text!r} is not {kind}/NAME or {kind}/NAME/container/C")
    if not re.fullmatch(_OBJECT_NAME, name):
        raise TargetParseError(
            f"{text!r}: {name!r} is not a Kubernetes object name "
            "(lowercase letters, digits, '-' and '.')"
        )
    if container is not None and not re.fullmatch(_CONTAINER_NAME, container):
        raise TargetParseError(
            f"{text!r}: {container!r} is not a container name (lowercase letters, digits, '-')"
        )
    return name, container


def _with_container(base: str, container: str | None) -> str:
    return base if container is None else f"{base}/container/{container}"
