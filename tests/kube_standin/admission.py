"""Pod security admission (the `pod-security.kubernetes.io/enforce` namespace label), with the
checks that concern the agent and the API server's own wording of a violation."""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]
ENFORCE_LABEL = "pod-security.kubernetes.io/enforce"
# Capabilities the baseline level allows to be added.
BASELINE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)


def _quoted(items: list[str]) -> str:
    return ", ".join(f'"{item}"' for item in items)


def baseline_violations(spec: Obj, containers: list[Obj]) -> list[str]:
    """Violations of the baseline level, worded as the PodSecurity admission words them."""
    violations = []
    host = [f"{key}=true" for key in ("hostNetwork", "hostPID", "hostIPC") if spec.get(key)]
    if host:
        violations.append(f"host namespaces ({', '.join(host)})")
    privileged = [c["name"] for c in containers if c.get("securityContext", {}).get("privileged")]
    if privileged:
        noun = "container" if len(privileged) == 1 else "containers"
        violations.append(
            f"privileged ({noun} {_quoted(privileged)} must not set "
            "securityContext.privileged=true)"
        )
    for container in containers:
        added = container.get("securityContext", {}).get("capabilities", {}).get("add", [])
        extra = sorted(set(added) - BASELINE_CAPABILITIES)
        if extra:
            violations.append(
                f'non-default capabilities (container "{container["name"]}" must not include '
                f"{_quoted(extra)} in securityContext.capabilities.add)"
            )
    return violations


def check_pod(level: str | None, pod_name: str, spec: Obj, containers: list[Obj]) -> str | None:
    """The Forbidden message for a pod the namespace's enforce level refuses, else None."""
    if level in (None, "privileged"):
        return None
    violations = baseline_violations(spec, containers)
    if not violations:
        return None
    return f'pods "{pod_name}" is forbidden: violates PodSecurity "{level}:latest": ' + ", ".join(
        violations
    )
