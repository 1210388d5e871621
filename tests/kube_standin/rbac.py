"""Authentication (bearer tokens) and RBAC authorization of the stand-in, with the API
server's wording of a refusal.

`rules=None` grants everything (a cluster admin); otherwise the rules of a Role (apiGroups,
resources incl. subresources like "pods/portforward", verbs) apply in every namespace.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]


@dataclass(frozen=True)
class Request:
    """What a request asks for, in RBAC's terms."""

    verb: str
    group: str
    resource: str
    subresource: str | None
    namespace: str | None
    name: str | None

    @property
    def rbac_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


def allows(rules: list[Obj] | None, request: Request) -> bool:
    if rules is None:
        return True
    for rule in rules:
        groups, resources, verbs = (
            rule.get("apiGroups", []),
            rule.get("resources", []),
            rule.get("verbs", []),
        )
        if (
            (request.group in groups or "*" in groups)
            and (request.rbac_resource in resources or "*" in resources)
            and (request.verb in verbs or "*" in verbs)
        ):
            return True
    return False


def forbidden_message(user: str, request: Request) -> str:
    subject = f"{request.resource}.{request.group}" if request.group else request.resource
    if request.name:
        subject += f' "{request.name}"'
    where = (
        f' in the namespace "{request.namespace}"' if request.namespace else " at the cluster scope"
    )
    return (
        f'{subject} is forbidden: User "{user}" cannot {request.verb} resource '
        f'"{request.rbac_resource}" in API group "{request.group}"{where}'
    )


def forbidden_details(request: Request) -> Obj:
    details: Obj = {}
    if request.name:
        details["name"] = request.name
    if request.group:
        details["group"] = request.group
    details["kind"] = request.resource
    return details
