"""Raw mapping (from JSON, YAML or TOML) -> validated Config, one function per section.

Every section accepts mirrord's shorthands (`"fs": "write"`, `"incoming": "steal"`,
`"env": false`, ...). A null value means "not set": the default applies.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

from mirrord_trace.config.errors import ConfigError
from mirrord_trace.config.filters import (
    DNS_FILTER_SYNTAX,
    FILTER_SYNTAX,
    FilterSyntaxError,
    parse_address_filter,
)
from mirrord_trace.config.http_filter import HTTP_FILTER_KEYS, parse_http_filter
from mirrord_trace.config.model import (
    AGENT_LOG_LEVELS,
    IMAGE_PULL_POLICIES,
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
from mirrord_trace.config.values import (
    check_keys,
    expect_bool,
    expect_choice,
    expect_int,
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

# Every key each section accepts; anything else is an error. docs/configuration.md has a
# heading per dotted key (tests/test_config_docs.py keeps the two in step).
SECTION_KEYS: dict[str, tuple[str, ...]] = {
    "": ("target", "kubeconfig", "kube_context", "engine", "feature", "agent"),
    "target": ("path", "namespace"),
    "feature": ("env", "fs", "network"),
    "feature.env": ("include", "exclude", "override", "unset"),
    "feature.fs": ("mode", "read_write", "read_only", "local", "not_found"),
    "feature.network": ("incoming", "outgoing", "dns"),
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
    "feature.network.outgoing": ("tcp", "udp", "ignore_localhost", "filter"),
    "feature.network.outgoing.filter": ("remote", "local"),
    "feature.network.dns": ("enabled", "filter"),
    "feature.network.dns.filter": ("remote", "local"),
    "agent": (
        "image",
        "image_pull_policy",
        "namespace",
        "ttl",
        "ephemeral",
        "privileged",
        "startup_timeout",
        "communication_timeout",
        "log_level",
        "network_interface",
        "flush_connections",
    ),
}


def all_keys() -> list[str]:
    """Every dotted key the configuration accepts, sections included."""
    return [join(section, name) for section, names in SECTION_KEYS.items() for name in names]


# Kubernetes namespaces are DNS-1123 labels.
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def parse_config(raw: Mapping[str, Any]) -> Config:
    """Validate a whole configuration document (the top-level mapping of the file)."""
    raw = expect_mapping(raw, "")
    check_keys(raw, "", SECTION_KEYS[""])
    return Config(
        target=_optional(raw, "target", "target", _target, TargetConfig()),
        kubeconfig=_optional(raw, "kubeconfig", "kubeconfig", expect_str, None),
        kube_context=_optional(raw, "kube_context", "kube_context", expect_str, None),
        engine=_optional(raw, "engine", "engine", _engine, None),
        feature=_optional(raw, "feature", "feature", _feature, FeatureConfig()),
        agent=_optional(raw, "agent", "agent", _agent, AgentConfig()),
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
    return TargetConfig(
        path=_optional(section, "path", join(key, "path"), _target_path, None),
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
    lists = SECTION_KEYS[key][1:]  # all but "mode"
    check_keys(section, key, SECTION_KEYS[key])
    patterns = {
        name: _optional(section, name, join(key, name), _path_regexes, ()) for name in lists
    }
    return FsConfig(
        mode=_optional(section, "mode", join(key, "mode"), _fs_mode, FsMode.READ), **patterns
    )


def _fs_mode(value: object, key: str) -> FsMode:
    return FsMode(expect_choice(value, key, [mode.value for mode in FsMode]))


def _path_regexes(value: object, key: str) -> tuple[re.Pattern[str], ...]:
    return expect_regex_list(value, key, re.IGNORECASE)


def _network(value: object, key: str) -> NetworkConfig:
    section = expect_mapping(value, key)
    check_keys(section, key, SECTION_KEYS[key])
    return NetworkConfig(
        incoming=_optional(section, "incoming", join(key, "incoming"), _incoming, IncomingConfig()),
        outgoing=_optional(section, "outgoing", join(key, "outgoing"), _outgoing, OutgoingConfig()),
        dns=_optional(section, "dns", join(key, "dns"), _dns, DnsConfig()),
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


def _agent(value: object, key: str) -> AgentConfig:
    section = expect_mapping(value, key)
    check_keys(section, key, SECTION_KEYS[key])

    def field(name: str, reader: Callable[[Any, str], T], default: T) -> T:
        return _optional(section, name, join(key, name), reader, default)

    return AgentConfig(
        image=field("image", expect_str, None),
        image_pull_policy=field("image_pull_policy", _choice(IMAGE_PULL_POLICIES), "IfNotPresent"),
        namespace=field("namespace", parse_namespace, None),
        ttl=field("ttl", parse_agent_ttl, 1),
        ephemeral=field("ephemeral", expect_bool, False),
        privileged=field("privileged", expect_bool, False),
        startup_timeout=field("startup_timeout", _int_range(1, 3600), 60),
        communication_timeout=field("communication_timeout", _int_range(1, 65535), None),
        log_level=field("log_level", _choice(AGENT_LOG_LEVELS), "info"),
        network_interface=field("network_interface", expect_str, None),
        flush_connections=field("flush_connections", expect_bool, False),
    )


def parse_agent_ttl(value: object, key: str) -> int:
    """Seconds the agent pod stays after the agent exits (mirrord: a u16)."""
    return expect_int(value, key, 0, 65535)


def _choice(choices: tuple[str, ...]) -> Callable[[Any, str], str]:
    return lambda value, key: expect_choice(value, key, choices)


def _int_range(low: int, high: int) -> Callable[[Any, str], int]:
    return lambda value, key: expect_int(value, key, low, high)
