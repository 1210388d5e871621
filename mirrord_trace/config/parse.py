"""Raw mapping (from JSON, YAML or TOML) -> validated Config, one function per section.

Every section accepts mirrord's shorthands (`"fs": "write"`, `"incoming": "steal"`,
`"env": false`, ...). A null value means "not set": the default applies.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

from mirrord_trace.config.agent_section import AGENT_KEYS
from mirrord_trace.config.agent_section import parse_agent as _agent
from mirrord_trace.config.errors import ConfigError
from mirrord_trace.config.filters import (
    DNS_FILTER_SYNTAX,
    FILTER_SYNTAX,
    FilterSyntaxError,
    parse_address_filter,
)
from mirrord_trace.config.http_filter import HTTP_FILTER_KEYS, parse_http_filter
from mirrord_trace.config.model import (
    AgentConfig,
    ConcurrentSteal,
    Config,
    DnsConfig,
    EnvConfig,
    FeatureConfig,
    FilterSide,
    FsConfig,
    FsMode,
    HttpFilterConfig,
    IncomingConfig,
    IncomingMode,
    NetworkConfig,
    OutgoingConfig,
    TargetConfig,
    TrafficFilter,
)
from mirrord_trace.config.triage import triage
from mirrord_trace.config.values import (
    check_keys,
    compile_regex,
    expect_bool,
    expect_choice,
    expect_mapping,
    expect_port_list,
    expect_port_pairs,
    expect_regex_list,
    expect_str,
    expect_str_list,
    expect_str_map,
    join,
    show,
)
from mirrord_trace.targets import (
    TARGET_FORMS,
    Target,
    TargetParseError,
    parse_target,
    target_from_mapping,
)

T = TypeVar("T")

# The fields of a target path, which mirrord also accepts directly under `target`.
TARGET_PATH_FIELDS = ("pod", "deployment", "rollout", "container", "pid")

# Every key each section accepts; anything else is an error. docs/configuration.md has a
# heading per dotted key (tests/test_config_docs.py keeps the two in step).
SECTION_KEYS: dict[str, tuple[str, ...]] = {
    "": (
        "target",
        "kubeconfig",
        "kube_context",
        "engine",
        "accept_invalid_certificates",
        "feature",
        "agent",
        "key",
        "skip_processes",
        "skip_build_tools",
        "skip_extra_build_tools",
    ),
    "target": ("path", "namespace", *TARGET_PATH_FIELDS),
    "feature": ("env", "fs", "network", "hostname"),
    "feature.env": ("include", "exclude", "override", "unset", "env_file", "mapping"),
    "feature.fs": ("mode", "read_write", "read_only", "local", "not_found", "mapping"),
    "feature.network": ("incoming", "outgoing", "dns", "ipv6"),
    "feature.network.incoming": (
        "mode",
        "http_filter",
        "port_mapping",
        "listen_ports",
        "ignore_localhost",
        "ignore_ports",
        "ports",
        "on_concurrent_steal",
    ),
    "feature.network.incoming.http_filter": HTTP_FILTER_KEYS,
    "feature.network.outgoing": ("tcp", "udp", "ignore_localhost", "filter", "unix_streams"),
    "feature.network.outgoing.filter": ("remote", "local"),
    "feature.network.dns": ("enabled", "filter"),
    "feature.network.dns.filter": ("remote", "local"),
    "agent": AGENT_KEYS,
}


def all_keys() -> list[str]:
    """Every dotted key the configuration accepts, sections included (the fields of a target
    path that mirrord also takes directly under `target` are documented under target.path)."""
    return [
        join(section, name)
        for section, names in SECTION_KEYS.items()
        for name in names
        if not (section == "target" and name in TARGET_PATH_FIELDS)
    ]


# Kubernetes namespaces are DNS-1123 labels.
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def parse_config(raw: Mapping[str, Any]) -> Config:
    """Validate a whole configuration document (the top-level mapping of the file).

    mirrord's keys that do nothing here are taken out first, each with a warning
    (Config.warnings); see mirrord_trace.config.triage.
    """
    raw, warnings = triage(expect_mapping(raw, ""))
    check_keys(raw, "", SECTION_KEYS[""])
    agent, agent_warnings = _optional(raw, "agent", "agent", _agent, (AgentConfig(), ()))
    return Config(
        warnings=warnings + agent_warnings,
        key=_optional(raw, "key", "key", expect_str, None),
        skip_processes=_optional(raw, "skip_processes", "skip_processes", _names, ()),
        skip_build_tools=_optional(raw, "skip_build_tools", "skip_build_tools", expect_bool, True),
        skip_extra_build_tools=_optional(
            raw, "skip_extra_build_tools", "skip_extra_build_tools", _names, ()
        ),
        accept_invalid_certificates=_optional(
            raw, "accept_invalid_certificates", "accept_invalid_certificates", expect_bool, None
        ),
        agent=agent,
        target=_optional(raw, "target", "target", _target, TargetConfig()),
        kubeconfig=_optional(raw, "kubeconfig", "kubeconfig", expect_str, None),
        kube_context=_optional(raw, "kube_context", "kube_context", expect_str, None),
        engine=_optional(raw, "engine", "engine", _engine, None),
        feature=_optional(raw, "feature", "feature", _feature, FeatureConfig()),
    )


def _engine(value: Any, key: str) -> str:
    return expect_choice(value, key, ("ptrace", "notify"))


def _optional(
    mapping: Mapping[str, Any],
    name: str,
    key: str,
    reader: Callable[[Any, str], T],
    default: T,
) -> T:
    value = mapping.get(name)
    return default if value is None else reader(value, key)


def _target(value: object, key: str) -> TargetConfig:
    if isinstance(value, str):
        return TargetConfig(path=_target_path(value, key))
    section = expect_mapping(value, key)
    check_keys(section, key, SECTION_KEYS[key])
    inline = {name: section[name] for name in TARGET_PATH_FIELDS if name in section}
    if inline and section.get("path") is not None:
        raise ConfigError(key, "give the target either as path or as its fields, not both")
    path = _target_path(inline, key) if inline else None
    return TargetConfig(
        path=_optional(section, "path", join(key, "path"), _target_path, path),
        namespace=_optional(section, "namespace", join(key, "namespace"), parse_namespace, None),
    )


def _target_path(value: object, key: str) -> Target:
    try:
        if isinstance(value, Mapping):
            return target_from_mapping(dict(value))
        return parse_target(expect_str(value, key))
    except TargetParseError as error:
        raise ConfigError(key, f"{error}; expected one of {TARGET_FORMS}") from None


def parse_namespace(value: object, key: str) -> str:
    """A Kubernetes namespace name (also used for the -n flag)."""
    text = expect_str(value, key)
    if not _NAMESPACE.fullmatch(text):
        raise ConfigError(
            key,
            f"{show(text)} is not a namespace name (up to 63 lowercase letters, digits and '-')",
        )
    return text


def _feature(value: object, key: str) -> FeatureConfig:
    section = expect_mapping(value, key)
    check_keys(section, key, SECTION_KEYS[key])
    return FeatureConfig(
        env=_optional(section, "env", join(key, "env"), _env, EnvConfig()),
        fs=_optional(section, "fs", join(key, "fs"), _fs, FsConfig()),
        network=_optional(section, "network", join(key, "network"), _network, NetworkConfig()),
        hostname=_optional(section, "hostname", join(key, "hostname"), expect_bool, True),
    )


def _toggle_section(value: object, key: str) -> Mapping[str, Any]:
    """Sections that mirrord also accepts as a plain true/false."""
    if not isinstance(value, Mapping):
        raise ConfigError(key, f"{show(value)} is not true, false or a mapping of keys")
    return expect_mapping(value, key)


def _env(value: object, key: str) -> EnvConfig:
    if isinstance(value, bool):
        return EnvConfig(enabled=value)
    section = _toggle_section(value, key)
    check_keys(section, key, SECTION_KEYS[key])
    override = _optional(section, "override", join(key, "override"), expect_str_map, {})
    for name in override:
        validate_env_pattern(name, join(key, "override"), wildcards=False)
    return EnvConfig(
        enabled=True,
        include=_optional(section, "include", join(key, "include"), env_pattern_list, None),
        exclude=_optional(section, "exclude", join(key, "exclude"), env_pattern_list, ()),
        override=MappingProxyType(override),
        unset=_optional(section, "unset", join(key, "unset"), env_pattern_list, ()),
        env_file=_optional(section, "env_file", join(key, "env_file"), expect_str, None),
        mapping=_optional(section, "mapping", join(key, "mapping"), _env_mapping, ()),
    )


def _env_mapping(value: object, key: str) -> tuple[tuple[re.Pattern[str], str], ...]:
    """`{NAME_REGEX: VALUE}`: a target variable whose name the regex finds gets VALUE."""
    return tuple(
        (compile_regex(pattern, join(key, pattern)), replacement)
        for pattern, replacement in expect_str_map(value, key).items()
    )


def env_pattern_list(value: object, key: str) -> tuple[str, ...]:
    """include/exclude: a list or a `;`-separated string of names with `*`/`?` wildcards."""
    patterns = expect_str_list(value, key, semicolons=True)
    for pattern in patterns:
        validate_env_pattern(pattern, key, wildcards=True)
    return patterns


def validate_env_pattern(pattern: str, key: str, *, wildcards: bool) -> None:
    if not pattern or "=" in pattern or "\0" in pattern:
        what = "pattern" if wildcards else "variable name"
        raise ConfigError(key, f"{show(pattern)} is not a {what} (non-empty, no '=')")


def _fs(value: object, key: str) -> FsConfig:
    if isinstance(value, bool):
        # mirrord: true is the default (read), false reads everything locally.
        return FsConfig(mode=FsMode.READ if value else FsMode.LOCAL)
    if isinstance(value, str):
        return FsConfig(mode=_fs_mode(value, key))
    section = expect_mapping(value, key)
    lists = ("read_write", "read_only", "local", "not_found")
    check_keys(section, key, SECTION_KEYS[key])
    patterns = {
        name: _optional(section, name, join(key, name), _path_regexes, ()) for name in lists
    }
    return FsConfig(
        mode=_optional(section, "mode", join(key, "mode"), _fs_mode, FsMode.READ),
        mapping=_optional(section, "mapping", join(key, "mapping"), _path_mapping, ()),
        **patterns,
    )


def _path_mapping(value: object, key: str) -> tuple[tuple[re.Pattern[str], str], ...]:
    """`{REGEX: REPLACEMENT}`, in mirrord's (Rust regex) replacement syntax: `$1`, `${name}`,
    `$$`; kept as Python's (`\\g<1>`, `\\g<name>`, `$`)."""
    entries = []
    for pattern, replacement in expect_str_map(value, key).items():
        at = join(key, pattern)
        regex = compile_regex(pattern, at)
        entries.append((regex, rust_replacement(replacement, regex, at)))
    return tuple(entries)


_RUST_GROUP = re.compile(r"\$(\$|\{([^}]*)\}|([0-9A-Za-z_]+))")


def rust_replacement(text: str, regex: re.Pattern[str], key: str) -> str:
    """Rust regex's `$1`/`${name}`/`$$` -> Python's `\\g<1>`/`\\g<name>`/`$`; a group the
    regex does not have is an error here (Rust would put nothing there, silently)."""

    def group(match: re.Match[str]) -> str:
        if match.group(1) == "$":
            return "$"
        name = match.group(2) if match.group(2) is not None else match.group(3)
        known = (name.isdigit() and int(name) <= regex.groups) or name in regex.groupindex
        if not known:
            raise ConfigError(key, f"{show(text)} names group {name!r}, which the regex lacks")
        return f"\\g<{name}>"

    return _RUST_GROUP.sub(group, text.replace("\\", "\\\\"))


def _fs_mode(value: object, key: str) -> FsMode:
    return FsMode(expect_choice(value, key, [mode.value for mode in FsMode]))


def _path_regexes(value: object, key: str) -> tuple[re.Pattern[str], ...]:
    return expect_regex_list(value, key, re.IGNORECASE)


def _names(value: object, key: str) -> tuple[str, ...]:
    """A name or a list of names (process names)."""
    names = expect_str_list(value, key, semicolons=True)
    for name in names:
        if "/" in name or "\0" in name:
            raise ConfigError(key, f"{show(name)} is not a process name (no '/')")
    return names


def _network(value: object, key: str) -> NetworkConfig:
    if isinstance(value, bool):
        # mirrord: true is the defaults; false turns incoming, outgoing and remote DNS off.
        if value:
            return NetworkConfig()
        return NetworkConfig(
            incoming=IncomingConfig(mode=IncomingMode.OFF),
            outgoing=OutgoingConfig(tcp=False, udp=False),
            dns=DnsConfig(enabled=False),
        )
    section = _toggle_section(value, key)
    check_keys(section, key, SECTION_KEYS[key])
    return NetworkConfig(
        incoming=_optional(section, "incoming", join(key, "incoming"), _incoming, IncomingConfig()),
        outgoing=_optional(section, "outgoing", join(key, "outgoing"), _outgoing, OutgoingConfig()),
        dns=_optional(section, "dns", join(key, "dns"), _dns, DnsConfig()),
        ipv6=_optional(section, "ipv6", join(key, "ipv6"), expect_bool, True),
    )


def _incoming(value: object, key: str) -> IncomingConfig:
    if isinstance(value, bool):
        return IncomingConfig(mode=IncomingMode.MIRROR if value else IncomingMode.OFF)
    if isinstance(value, str):
        return IncomingConfig(mode=_incoming_mode(value, key))
    section = expect_mapping(value, key)
    check_keys(section, key, SECTION_KEYS[key])
    ignore_ports = _optional(section, "ignore_ports", join(key, "ignore_ports"), _port_set, None)
    ports = _optional(section, "ports", join(key, "ports"), _port_set, None)
    if ignore_ports is not None and ports is not None:
        raise ConfigError(
            join(key, "ports"),
            "cannot be combined with ignore_ports (use one of ports, ignore_ports)",
        )
    return IncomingConfig(
        mode=_optional(section, "mode", join(key, "mode"), _incoming_mode, IncomingMode.MIRROR),
        http_filter=_optional(
            section, "http_filter", join(key, "http_filter"), _http_filter, HttpFilterConfig()
        ),
        port_mapping=_optional(
            section, "port_mapping", join(key, "port_mapping"), expect_port_pairs, ()
        ),
        listen_ports=_optional(
            section, "listen_ports", join(key, "listen_ports"), expect_port_pairs, ()
        ),
        ignore_localhost=_optional(
            section, "ignore_localhost", join(key, "ignore_localhost"), expect_bool, False
        ),
        ignore_ports=ignore_ports or frozenset(),
        ports=ports,
        on_concurrent_steal=_optional(
            section,
            "on_concurrent_steal",
            join(key, "on_concurrent_steal"),
            _concurrent_steal,
            ConcurrentSteal.ABORT,
        ),
    )


def _concurrent_steal(value: object, key: str) -> ConcurrentSteal:
    return ConcurrentSteal(expect_choice(value, key, [choice.value for choice in ConcurrentSteal]))


def _incoming_mode(value: object, key: str) -> IncomingMode:
    return IncomingMode(expect_choice(value, key, [mode.value for mode in IncomingMode]))


def _port_set(value: object, key: str) -> frozenset[int]:
    return frozenset(expect_port_list(value, key))


def _http_filter(value: object, key: str) -> HttpFilterConfig:
    return parse_http_filter(value, key)


def _outgoing(value: object, key: str) -> OutgoingConfig:
    if isinstance(value, bool):
        return OutgoingConfig(tcp=value, udp=value)
    section = _toggle_section(value, key)
    check_keys(section, key, SECTION_KEYS[key])
    return OutgoingConfig(
        tcp=_optional(section, "tcp", join(key, "tcp"), expect_bool, True),
        udp=_optional(section, "udp", join(key, "udp"), expect_bool, True),
        ignore_localhost=_optional(
            section, "ignore_localhost", join(key, "ignore_localhost"), expect_bool, False
        ),
        filter=_optional(section, "filter", join(key, "filter"), _outgoing_filter, None),
        unix_streams=_optional(
            section, "unix_streams", join(key, "unix_streams"), expect_regex_list, ()
        ),
    )


def _dns(value: object, key: str) -> DnsConfig:
    if isinstance(value, bool):
        return DnsConfig(enabled=value)
    section = _toggle_section(value, key)
    check_keys(section, key, SECTION_KEYS[key])
    return DnsConfig(
        enabled=_optional(section, "enabled", join(key, "enabled"), expect_bool, True),
        filter=_optional(section, "filter", join(key, "filter"), _dns_filter, None),
    )


def _outgoing_filter(value: object, key: str) -> TrafficFilter:
    return _traffic_filter(value, key, with_protocol=True)


def _dns_filter(value: object, key: str) -> TrafficFilter:
    return _traffic_filter(value, key, with_protocol=False)


def _traffic_filter(value: object, key: str, *, with_protocol: bool) -> TrafficFilter:
    section = expect_mapping(value, key)
    sides = [side.value for side in FilterSide]
    check_keys(section, key, SECTION_KEYS[key])
    given = [side for side in sides if section.get(side) is not None]
    if len(given) != 1:
        raise ConfigError(key, f"needs exactly one of {', '.join(sides)} (got {len(given)})")
    side = given[0]
    side_key = join(key, side)
    syntax = FILTER_SYNTAX if with_protocol else DNS_FILTER_SYNTAX
    entries = []
    for text in expect_str_list(section[side], side_key, semicolons=False):
        try:
            entries.append(parse_address_filter(text, with_protocol=with_protocol))
        except FilterSyntaxError as error:
            raise ConfigError(
                side_key, f"{show(text)} is not a valid filter: {error}; expected {syntax}"
            ) from None
    return TrafficFilter(side=FilterSide(side), entries=tuple(entries))
