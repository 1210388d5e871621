"""feature.network.incoming.http_filter, as mirrord 3.250 has it.

Keys: header_filter, path_filter, method_filter, body_filter, all_of, any_of, ports. Each
filter is checked when the configuration is loaded (regexes compile, JSONPath queries are RFC
9535, methods are tokens) and turned into the wire tree the agent runs (agent.http.filter):
`{"header": R}`, `{"path": R}`, `{"method": M}`, `{"body": "json", "query": Q, "matches": R}`,
`{"all_of": [...]}`, `{"any_of": [...]}`. mirrord takes one top-level filter; several given
here must all match (they become one all_of).

`ports`: the filter applies only on these ports; absent, on every stolen port (3.250). Other
stolen ports are stolen whole.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from mirrord_trace.config.errors import ConfigError
from mirrord_trace.config.model import HttpFilterConfig
from mirrord_trace.config.values import (
    check_keys,
    compile_regex,
    expect_mapping,
    expect_port_list,
    expect_str,
    join,
    show,
)
from mirrord_trace.protocol.jsonpath import JSONPathError, compile_query

HTTP_FILTER_KEYS = (
    "header_filter",
    "path_filter",
    "method_filter",
    "body_filter",
    "all_of",
    "any_of",
    "ports",
)
_METHOD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_INNER_SHAPES = (
    '{"header": R}, {"path": R}, {"method": M} or {"body": "json", "query": Q, "matches": R}'
)


def parse_http_filter(value: object, key: str) -> HttpFilterConfig:
    section = expect_mapping(value, key)
    check_keys(section, key, HTTP_FILTER_KEYS)
    parts: list[dict[str, Any]] = []
    for name, kind in (("header_filter", "header"), ("path_filter", "path")):
        if section.get(name) is not None:
            parts.append({kind: _regex(section[name], join(key, name), re.IGNORECASE)})
    if section.get("method_filter") is not None:
        parts.append({"method": _method(section["method_filter"], join(key, "method_filter"))})
    if section.get("body_filter") is not None:
        parts.append(_body(section["body_filter"], join(key, "body_filter")))
    for name in ("all_of", "any_of"):
        if section.get(name) is not None:
            parts.append({name: _inner_list(section[name], join(key, name))})
    ports = None
    if section.get("ports") is not None:
        ports = expect_port_list(section["ports"], join(key, "ports"))
    wire = None if not parts else parts[0] if len(parts) == 1 else {"all_of": parts}
    return HttpFilterConfig(wire=wire, ports=ports)


def _regex(value: object, key: str, flags: int) -> str:
    source = expect_str(value, key)
    compile_regex(source, key, flags)
    return source


def _method(value: object, key: str) -> str:
    method = expect_str(value, key)
    if not _METHOD.fullmatch(method):
        raise ConfigError(key, f"{show(method)} is not an HTTP method name (e.g. POST)")
    return method


def _body(value: object, key: str) -> dict[str, Any]:
    section = expect_mapping(value, key)
    check_keys(section, key, ("body", "query", "matches"))
    if section.get("body") != "json":
        raise ConfigError(join(key, "body"), 'must be "json" (the one body filter mirrord has)')
    for needed in ("query", "matches"):
        if needed not in section:
            raise ConfigError(join(key, needed), "is missing")
    query = expect_str(section["query"], join(key, "query"))
    try:
        compile_query(query)
    except JSONPathError as error:
        raise ConfigError(
            join(key, "query"), f"{show(query)} is not an RFC 9535 JSONPath query ({error})"
        ) from None
    return {
        "body": "json",
        "query": query,
        "matches": _regex(section["matches"], join(key, "matches"), 0),
    }


def _inner_list(value: object, key: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise ConfigError(key, f"must be a non-empty list of filters ({_INNER_SHAPES})")
    return [_inner(item, f"{key}[{n}]") for n, item in enumerate(value)]


def _inner(value: object, key: str) -> dict[str, Any]:
    section: Mapping[str, Any] = expect_mapping(value, key)
    keys = set(section)
    if keys == {"header"} or keys == {"path"}:
        (kind,) = keys
        return {kind: _regex(section[kind], join(key, kind), re.IGNORECASE)}
    if keys == {"method"}:
        return {"method": _method(section["method"], join(key, "method"))}
    if "body" in keys:
        return _body(section, key)
    raise ConfigError(key, f"is {show(dict(section))}; write one of {_INNER_SHAPES}")
