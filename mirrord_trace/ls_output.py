"""What `mirrord-trace ls` prints, as `mirrord ls` does for IDE extensions and scripts.

- `-o json`: a JSON array of target paths (`["pod/web", "deployment/shop"]`);
- with MIRRORD_LS_RICH_OUTPUT=true (mirrord's IDE extensions set it), a JSON object:
  `{"targets": [{"path": ..., "available": true}], "current_namespace": ..., "namespaces": [...]}`
  (namespaces: the cluster's, or only the current one when the user may not list them);
- `-t/--target-type` (repeatable), or MIRRORD_LS_TARGET_TYPES as a JSON array, keeps only
  targets of those types (mirrord's names; types mirrord-trace cannot target list nothing).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

RICH_OUTPUT_VARIABLE = "MIRRORD_LS_RICH_OUTPUT"
TARGET_TYPES_VARIABLE = "MIRRORD_LS_TARGET_TYPES"
# mirrord's TargetType names.
TARGET_TYPES = (
    "targetless", "pod", "deployment", "rollout", "job", "cronjob", "statefulset", "service",
    "replicaset",
)  # fmt: skip


class LsError(ValueError):
    """A bad MIRRORD_LS_* value; str() is one line."""


def wanted_types(
    flags: Sequence[str], environ: Mapping[str, str] | None = None
) -> frozenset[str] | None:
    """The target types to list (None: all): the flags, else MIRRORD_LS_TARGET_TYPES."""
    if flags:
        return frozenset(flags)
    environ = os.environ if environ is None else environ
    text = environ.get(TARGET_TYPES_VARIABLE)
    if not text:
        return None
    import json  # here, not at the top: cli imports this module, and exec must start fast

    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, list) or not all(item in TARGET_TYPES for item in value):
        raise LsError(
            f"{TARGET_TYPES_VARIABLE}={text!r} is not a JSON array of {', '.join(TARGET_TYPES)}"
        )
    return frozenset(value)


def kept(targets: list[str], types: frozenset[str] | None) -> list[str]:
    if types is None:
        return targets
    return [target for target in targets if target.split("/", 1)[0] in types]


def render(
    targets: list[str],
    output: str,
    namespace: str,
    namespaces: Callable[[], list[str] | None],
    environ: Mapping[str, str] | None = None,
) -> str:
    """The text to print (no trailing newline); `namespaces` is asked only for rich output."""
    import json

    environ = os.environ if environ is None else environ
    if environ.get(RICH_OUTPUT_VARIABLE, "").lower() == "true":
        return json.dumps(
            {
                "targets": [{"path": target, "available": True} for target in targets],
                "current_namespace": namespace,
                "namespaces": namespaces() or [namespace],
            }
        )
    if output == "json":
        return json.dumps(targets)
    return "\n".join(targets)
