"""`mirrord-trace verify-config [--ide] FILE`: mirrord's JSON verdict on a configuration file.

    {"type": "Success", "config": {"path": ..., "namespace": ...}, "warnings": [...],
     "compatible_target_types": [...]}
    {"type": "Fail", "errors": ["..."]}

As in mirrord, `config` is the target part (what IDE extensions need to offer a target picker):
without --ide a file that names no target means targetless; with --ide the path stays null (the
extension asks the user). The MIRRORD_* variables apply, as they do to `exec`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from mirrord_trace.config.errors import ConfigError
from mirrord_trace.targets import (
    DeploymentTarget,
    PidTarget,
    PodTarget,
    RolloutTarget,
    Target,
    Targetless,
)

# The kinds of target mirrord-trace can run against (mirrord's TargetType names).
COMPATIBLE_TARGET_TYPES = ("targetless", "pod", "deployment", "rollout")


def verify_config(
    path: str | os.PathLike[str], *, ide: bool = False, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    from mirrord_trace.config.loader import load_config

    try:
        cfg = load_config(path, environ=environ)
    except ConfigError as error:
        where = f" (in {error.source})" if error.source and error.key else ""
        return {"type": "Fail", "errors": [f"{error}{where}"]}
    path_value: Any = _target_json(cfg.target.path) if cfg.target.path is not None else None
    if path_value is None and not ide:
        path_value = "targetless"
    return {
        "type": "Success",
        "config": {"path": path_value, "namespace": cfg.target.namespace},
        "warnings": list(cfg.warnings),
        "compatible_target_types": list(COMPATIBLE_TARGET_TYPES),
    }


def _target_json(target: Target) -> Any:
    """mirrord's serialisation of a target path: `{"pod": NAME, "container": C}`, ..."""
    if isinstance(target, Targetless):
        return "targetless"
    if isinstance(target, PodTarget):
        return {"pod": target.name, "container": target.container}
    if isinstance(target, DeploymentTarget):
        return {"deployment": target.name, "container": target.container}
    if isinstance(target, RolloutTarget):
        return {"rollout": target.name, "container": target.container}
    if isinstance(target, PidTarget):
        return {"pid": target.pid}
    return str(target)
