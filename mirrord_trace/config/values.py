"""Typed readers for one configuration value each; every failure names the dotted key.

A value of `None` (JSON `null`, YAML `~`) is not handled here: the section parsers treat a
null like an absent key, meaning "use the default", as mirrord does.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from mirrord_trace.config.errors import ConfigError

_MAX_SHOWN = 60


def show(value: object) -> str:
    """How a bad value is quoted in an error: as the user wrote it, truncated if long."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    else:
        text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def join(key: str, child: str) -> str:
    return f"{key}.{child}" if key else child


def expect_mapping(value: object, key: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(key, f"{show(value)} is not a mapping (write it as {{key: value, ...}})")
    for name in value:
        if not isinstance(name, str):
            raise ConfigError(key, f"key {show(name)} is not a string")
    return value


def check_keys(mapping: Mapping[str, Any], key: str, allowed: Collection[str]) -> None:
    """Unknown keys are errors: a typo must not silently fall back to a default."""
    for name in mapping:
        if name not in allowed:
            import difflib  # only on this error path: it is slow to import

            from mirrord_trace.config.keys import KEYS

            # mirrord's keys of this section that only warn are close matches too.
            prefix = f"{key}." if key else ""
            siblings = {
                known[len(prefix) :]
                for known in KEYS
                if known.startswith(prefix) and "." not in known[len(prefix) :]
            }
            close = difflib.get_close_matches(name, [*allowed, *sorted(siblings)], n=1)
            guess = f"did you mean {close[0]}? " if close else ""
            raise ConfigError(
                join(key, name), f"unknown key ({guess}allowed: {', '.join(sorted(allowed))})"
            )


def expect_bool(value: object, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, f"{show(value)} is not one of true, false")
    return value


def expect_str(value: object, key: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise ConfigError(key, f"{show(value)} is not a string")
    if not value and not allow_empty:
        raise ConfigError(key, "'' is empty (give a non-empty string)")
    return value


def expect_int(value: object, key: str, low: int, high: int) -> int:
    # bool is an int subclass in Python; `true` must not be read as 1.
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(key, f"{show(value)} is not an integer from {low} to {high}")
    return value


def expect_port(value: object, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigError(key, f"{show(value)} is not a port number (1 to 65535)")
    return value


def expect_choice(value: object, key: str, choices: Iterable[str]) -> str:
    allowed = list(choices)
    if not isinstance(value, str) or value not in allowed:
        raise ConfigError(key, f"{show(value)} is not one of {', '.join(allowed)}")
    return value


def expect_str_list(value: object, key: str, *, semicolons: bool) -> tuple[str, ...]:
    """A list of strings, or one string (split at `;` where mirrord does so)."""
    if isinstance(value, str):
        if not semicolons:
            return (value,)
        return tuple(part.strip() for part in value.split(";") if part.strip())
    if not isinstance(value, list):
        raise ConfigError(key, f"{show(value)} is not a string or a list of strings")
    for item in value:
        if not isinstance(item, str):
            raise ConfigError(key, f"list item {show(item)} is not a string")
    return tuple(value)


def expect_port_list(value: object, key: str) -> tuple[int, ...]:
    """A list of ports, or one port."""
    items = value if isinstance(value, list) else [value]
    return tuple(expect_port(item, key) for item in items)


def expect_port_pairs(value: object, key: str) -> tuple[tuple[int, int], ...]:
    """`[[local, remote], ...]`."""
    if not isinstance(value, list):
        raise ConfigError(key, f"{show(value)} is not a list of [port, port] pairs")
    pairs = []
    for item in value:
        if not isinstance(item, list) or len(item) != 2:
            raise ConfigError(key, f"{show(item)} is not a [port, port] pair")
        pairs.append((expect_port(item[0], key), expect_port(item[1], key)))
    return tuple(pairs)


# mirrord's regexes are Rust's, whose named groups are also written `(?<name>...)`; Python
# spells them `(?P<name>...)` (look-behinds, `(?<=` and `(?<!`, are the same in both).
_RUST_NAMED_GROUP = re.compile(r"(?<!\\)\(\?<(?=[A-Za-z_])")


def compile_regex(pattern: str, key: str, flags: int = 0) -> re.Pattern[str]:
    pattern = _RUST_NAMED_GROUP.sub("(?P<", pattern)
    try:
        return re.compile(pattern, flags)
    except re.error as error:
        message = f"{show(pattern)} is not a valid regular expression ({error})"
        raise ConfigError(key, message) from None


def expect_regex_list(value: object, key: str, flags: int = 0) -> tuple[re.Pattern[str], ...]:
    """A list of regular expressions, or one; each must compile."""
    return tuple(
        compile_regex(pattern, key, flags)
        for pattern in expect_str_list(value, key, semicolons=False)
    )


def expect_str_map(value: object, key: str) -> dict[str, str]:
    mapping = expect_mapping(value, key)
    for name, item in mapping.items():
        if not isinstance(item, str):
            raise ConfigError(join(key, name), f"{show(item)} is not a string")
    return dict(mapping)
