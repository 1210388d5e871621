"""Before strict parsing: sort a mirrord document's keys by what mirrord-trace does with them.

Keys that do nothing here (mirrord_trace.config.keys: IGNORED, NOT_YET) are taken out, each
with a warning naming it and saying why; a key that needs mirrord's operator fails the file
(unless it is given its "off" value); a REJECTED key fails with its reason. What remains is
parsed strictly by mirrord_trace.config.parse, so a typo is still an error, never a default.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mirrord_trace.config.errors import ConfigError
from mirrord_trace.config.keys import KEYS, OPERATOR_WHY, Status

# Keys whose value is itself a mapping of keys that this table knows (`feature`,
# `feature.network`, ...): only these are walked into. Free-form mappings (`agent.labels`,
# `feature.env.override`) are values, not sections.
_SECTIONS = frozenset(key.rsplit(".", 1)[0] for key in KEYS if "." in key)


def triage(raw: Mapping[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """-> (the document without the keys that do nothing here, the warnings about them)."""
    warnings: list[str] = []
    return _walk(raw, "", warnings), tuple(warnings)


def _walk(section: Mapping[str, Any], prefix: str, warnings: list[str]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for name, value in section.items():
        key = f"{prefix}.{name}" if prefix else str(name)
        entry = KEYS.get(key)
        if entry is None or entry.status is Status.WORKS:
            # Unknown keys stay: the strict parser names them (with a "did you mean").
            if key in _SECTIONS and isinstance(value, Mapping):
                value = _walk(value, key, warnings)
            kept[name] = value
            continue
        if value is None or (entry.inert is not None and entry.inert(value)):
            continue  # asks for nothing mirrord-trace does not do anyway
        if entry.status is Status.OPERATOR:
            raise ConfigError(key, f"{OPERATOR_WHY}{_also(entry.why)}")
        if entry.status is Status.REJECTED:
            raise ConfigError(key, entry.why)
        verdict = "ignored" if entry.status is Status.IGNORED else "not supported yet, ignored"
        warnings.append(f"{_named(key, value)}: {verdict} ({entry.why})")
    return kept


def _named(key: str, value: Any) -> str:
    """`experimental (tcp_ping4_mock, latency.receive_delay)`: a section is named with the
    keys it sets."""
    if key in _SECTIONS and isinstance(value, Mapping) and value:
        return f"{key} ({', '.join(_set_keys(key, value))})"
    return key


def _set_keys(section: str, value: Mapping[str, Any]) -> list[str]:
    names = []
    for name, item in value.items():
        key = f"{section}.{name}"
        if key in _SECTIONS and isinstance(item, Mapping) and item:
            names += [f"{name}.{inner}" for inner in _set_keys(key, item)]
        else:
            names.append(str(name))
    return names


def _also(why: str) -> str:
    return f"; {why}" if why else ""
