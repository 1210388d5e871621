"""The upstream Kubernetes OpenAPI schemas (as JSON schemas, strict: unknown fields are errors)
shipped by the kubernetes-validate package, with validators built once per schema."""

from __future__ import annotations

import json
import re
from functools import cache
from importlib.resources import files
from typing import Any

import jsonschema
from referencing import Registry, Resource

KUBERNETES_VERSION = "1.37.0"
_GROUP_DOMAIN = re.compile(r"^([^./]*)(?:\.[^/]*)?/")
_SCHEMAS = (
    files("kubernetes_validate") / "kubernetes-json-schema" / f"v{KUBERNETES_VERSION}-local-strict"
)


def schema_file(kind: str, api_version: str) -> str:
    """Pod, v1 -> pod-v1.json; Job, batch/v1 -> job-batch-v1.json (kubernetes-validate's names)."""
    # batch/v1 -> batch-v1, rbac.authorization.k8s.io/v1 -> rbac-v1, v1 -> v1
    group_version = _GROUP_DOMAIN.sub(r"\1-", api_version)
    return f"{kind.lower()}-{group_version}.json"


@cache
def _validator(name: str) -> Any:
    schema = json.loads((_SCHEMAS / name).read_text())
    definitions = json.loads((_SCHEMAS / "_definitions.json").read_text())
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.validators.validator_for(schema)(schema, registry=registry)


def validate(obj: dict[str, Any], name: str | None = None) -> None:
    """Raise jsonschema.ValidationError unless `obj` validates against schema file `name`
    (default: the one for its kind and apiVersion; Status and WatchEvent are meta-v1)."""
    if name is None:
        kind = obj["kind"]
        name = "status-meta-v1.json" if kind == "Status" else schema_file(kind, obj["apiVersion"])
    _validator(name).validate(obj)


def problem(obj: dict[str, Any], name: str | None = None) -> str | None:
    """The first validation error, as one line (None when `obj` is valid)."""
    try:
        validate(obj, name)
    except jsonschema.ValidationError as error:
        where = ".".join(str(part) for part in error.absolute_path)
        return f"{where}: {error.message}" if where else error.message
    return None
