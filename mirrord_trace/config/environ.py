"""mirrord's MIRRORD_* environment variables, applied over the file's keys.

Precedence is mirrord's: a command-line flag beats a variable, a variable beats the file, the
file beats the defaults (mirrord's CLI itself passes its flags on as these variables). IDE
extensions and CI jobs configure mirrord this way, so the same variables work here.

Each variable sets one dotted key (the table below, taken from mirrord 3.250's configuration
crate); its value is read as mirrord reads it: booleans are `true`/`false`, numbers decimal,
lists `;`-separated. An empty variable counts as unset. One deliberate difference: the agent
image variables (FALLBACK_VARIABLES) only fill in what the file does not say, because
mirrord-trace has no public agent image and MIRRORD_AGENT_IMAGE is where a user keeps theirs
(mirrord_trace.kube.image): a file naming another image for one project must win.
What the key then does (works, warns, needs the operator) is the key's business
(mirrord_trace.config.keys), so a variable can never do more than the key can.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

from mirrord_trace.config.errors import ConfigError

CONFIG_FILE_VARIABLE = "MIRRORD_CONFIG_FILE"
KEY_VARIABLE = "MIRRORD_KEY"


def _text(value: str) -> str:
    return value


def _flag(value: str) -> bool:
    # Rust's bool::from_str: exactly "true" or "false".
    if value not in ("true", "false"):
        raise ValueError("is not true or false")
    return value == "true"


def _number(value: str) -> int:
    if not value.isascii() or not value.isdigit():
        raise ValueError("is not a whole number")
    return int(value)


def _list(value: str) -> list[str]:
    return value.split(";")


def _ports(value: str) -> list[int]:
    return [_number(part) for part in value.split(";")]


# variable -> (dotted key, how mirrord reads the value)
VARIABLES: dict[str, tuple[str, Callable[[str], Any]]] = {
    "MIRRORD_IMPERSONATED_TARGET": ("target.path", _text),
    "MIRRORD_TARGET_NAMESPACE": ("target.namespace", _text),
    "MIRRORD_KUBECONFIG": ("kubeconfig", _text),
    "MIRRORD_KUBE_CONTEXT": ("kube_context", _text),
    "MIRRORD_ACCEPT_INVALID_CERTIFICATES": ("accept_invalid_certificates", _flag),
    "MIRRORD_SKIP_PROCESSES": ("skip_processes", _list),
    "MIRRORD_SKIP_BUILD_TOOLS": ("skip_build_tools", _flag),
    "MIRRORD_SKIP_EXTRA_BUILD_TOOLS": ("skip_extra_build_tools", _list),
    "MIRRORD_SKIP_SIP": ("skip_sip", _list),
    "MIRRORD_OPERATOR_ENABLE": ("operator", _flag),
    "MIRRORD_MULTI_CLUSTER": ("multi_cluster", _flag),
    "MIRRORD_API": ("api", _flag),
    "MIRRORD_TELEMETRY": ("telemetry", _flag),
    "MIRRORD_PROXY": ("use_proxy", _flag),
    "MIRRORD_AGENT_RUST_LOG": ("agent.log_level", _text),
    "MIRRORD_AGENT_JSON_LOG": ("agent.json_log", _flag),
    "MIRRORD_AGENT_NAMESPACE": ("agent.namespace", _text),
    "MIRRORD_AGENT_IMAGE": ("agent.image", _text),
    "MIRRORD_AGENT_IMAGE_REGISTRY": ("agent.image.registry", _text),
    "MIRRORD_AGENT_IMAGE_TAG": ("agent.image.tag", _text),
    "MIRRORD_AGENT_IMAGE_PULL_POLICY": ("agent.image_pull_policy", _text),
    "MIRRORD_AGENT_TTL": ("agent.ttl", _number),
    "MIRRORD_EPHEMERAL_CONTAINER": ("agent.ephemeral", _flag),
    "MIRRORD_AGENT_COMMUNICATION_TIMEOUT": ("agent.communication_timeout", _number),
    "MIRRORD_AGENT_STARTUP_TIMEOUT": ("agent.startup_timeout", _number),
    "MIRRORD_AGENT_STEALER_FLUSH_CONNECTIONS": ("agent.flush_connections", _flag),
    "MIRRORD_AGENT_EXTERNAL_IP_FIX": ("agent.external_ip_fix", _flag),
    "MIRRORD_AGENT_EXCLUDE_FROM_MESH": ("agent.exclude_from_mesh", _flag),
    "MIRRORD_AGENT_HTTP_DETECTION_TIMEOUT": ("agent.http_detection_timeout", _number),
    "MIRRORD_AGENT_CLEAN_IPTABLES_ON_START": ("agent.clean_iptables_on_start", _flag),
    "MIRRORD_ENV_LOAD_FROM_PROCESS": ("feature.env.load_from_process", _flag),
    "MIRRORD_OVERRIDE_ENV_VARS_INCLUDE": ("feature.env.include", _text),
    "MIRRORD_OVERRIDE_ENV_VARS_EXCLUDE": ("feature.env.exclude", _text),
    "MIRRORD_OVERRIDE_ENV_VARS_FILE": ("feature.env.env_file", _text),
    "MIRRORD_FILE_MODE": ("feature.fs.mode", _text),
    "MIRRORD_FILE_READ_WRITE_PATTERN": ("feature.fs.read_write", _list),
    "MIRRORD_FILE_READ_ONLY_PATTERN": ("feature.fs.read_only", _list),
    "MIRRORD_FILE_LOCAL_PATTERN": ("feature.fs.local", _list),
    "MIRRORD_REMOTE_DNS": ("feature.network.dns.enabled", _flag),
    "MIRRORD_ENABLE_IPV6": ("feature.network.ipv6", _flag),
    "MIRRORD_OPERATOR_ON_CONCURRENT_STEAL": ("feature.network.incoming.on_concurrent_steal", _text),
    "MIRRORD_HTTP_HEADER_FILTER": ("feature.network.incoming.http_filter.header_filter", _text),
    "MIRRORD_HTTP_PATH_FILTER": ("feature.network.incoming.http_filter.path_filter", _text),
    "MIRRORD_HTTP_METHOD_FILTER": ("feature.network.incoming.http_filter.method_filter", _text),
    "MIRRORD_HTTP_HEADER_FILTER_JQ": (
        "feature.network.incoming.http_filter.header_filter_jq",
        _text,
    ),
    "MIRRORD_HTTP_FILTER_PORTS": ("feature.network.incoming.http_filter.ports", _ports),
    "MIRRORD_TCP_OUTGOING": ("feature.network.outgoing.tcp", _flag),
    "MIRRORD_UDP_OUTGOING": ("feature.network.outgoing.udp", _flag),
    "MIRRORD_OUTGOING_REMOTE_UNIX_STREAMS": ("feature.network.outgoing.unix_streams", _text),
    "MIRRORD_PREVIEW_IMAGE": ("feature.preview.image", _text),
    "MIRRORD_PREVIEW_TTL_MINS": ("feature.preview.ttl_mins", _number),
    "MIRRORD_PREVIEW_TTL_SECS": ("feature.preview.ttl_secs", _number),
    "MIRRORD_PREVIEW_CREATION_TIMEOUT_SECS": ("feature.preview.creation_timeout_secs", _number),
    "MIRRORD_PREVIEW_REPLICAS": ("feature.preview.replicas", _number),
    "MIRRORD_PREVIEW_START_IDLE": ("feature.preview.idle.start_idle", _flag),
    "MIRRORD_PREVIEW_IDLE_SLEEP_AFTER_SECS": ("feature.preview.idle.sleep_after_secs", _number),
    "MIRRORD_PREVIEW_IDLE_WAKE_TIMEOUT_SECS": ("feature.preview.idle.wake_timeout_secs", _number),
}
# Below the file, not above it (see the module's doc).
FALLBACK_VARIABLES = frozenset(
    {"MIRRORD_AGENT_IMAGE", "MIRRORD_AGENT_IMAGE_REGISTRY", "MIRRORD_AGENT_IMAGE_TAG"}
)
# Variables that set a key through another's value (mirrord's older spellings).
STEAL_VARIABLE = "MIRRORD_AGENT_TCP_STEAL_TRAFFIC"  # true: incoming.mode steal
FILE_OPS_VARIABLES = ("MIRRORD_FILE_OPS", "MIRRORD_FILE_RO_OPS")  # write / read-only
ALL_VARIABLES = (
    CONFIG_FILE_VARIABLE,
    KEY_VARIABLE,
    *VARIABLES,
    STEAL_VARIABLE,
    *FILE_OPS_VARIABLES,
)


def settings_from_environment(
    environ: Mapping[str, str], *, fallbacks: bool = False
) -> list[tuple[str, Any, str]]:
    """-> [(dotted key, value, where)] for each MIRRORD_* variable that is set (not empty);
    with `fallbacks`, only the FALLBACK_VARIABLES, otherwise all the others."""
    environ = {name: value for name, value in environ.items() if value != ""}
    settings = []
    for variable, (key, read) in VARIABLES.items():
        if (variable in FALLBACK_VARIABLES) != fallbacks:
            continue
        if variable in environ:
            value = _read(variable, environ[variable], key, read)
            settings.append((key, value, f"the {variable} variable"))
    if fallbacks:
        return settings
    if STEAL_VARIABLE in environ:
        steal = _read(STEAL_VARIABLE, environ[STEAL_VARIABLE], "incoming.mode", _flag)
        settings.append(
            (
                "feature.network.incoming.mode",
                "steal" if steal else "mirror",
                f"the {STEAL_VARIABLE} variable",
            )
        )
    if "MIRRORD_FILE_MODE" not in environ:
        mode = _file_ops_mode(environ)
        if mode is not None:
            source = "the MIRRORD_FILE_OPS/MIRRORD_FILE_RO_OPS variables"
            settings.append(("feature.fs.mode", mode, source))
    return settings


def _file_ops_mode(environ: Mapping[str, str]) -> str | None:
    """mirrord's older pair: FILE_OPS=true writes, FILE_RO_OPS=true reads, false: local."""
    fs, ro = (
        _read(name, environ[name], "feature.fs.mode", _flag) if name in environ else None
        for name in FILE_OPS_VARIABLES
    )
    if fs is True:
        return "write"
    if ro is True:
        return "read"
    if fs is False or ro is False:
        return "local"
    return None


def _read(variable: str, text: str, key: str, read: Callable[[str], Any]) -> Any:
    try:
        return read(text)
    except ValueError as error:
        raise ConfigError(key, f"{variable}={text!r} {error}") from None


# A section that mirrord also takes as a single value, spelled out as the mapping it means,
# so that a variable can set one key inside it.
_EXPANSIONS: dict[str, Callable[[Any], dict[str, Any] | None]] = {
    "target": lambda value: {"path": value} if isinstance(value, str) else None,
    "feature.fs": lambda value: (
        {"mode": value}
        if isinstance(value, str)
        else {"mode": "read" if value else "local"}
        if isinstance(value, bool)
        else None
    ),
    "feature.network.incoming": lambda value: (
        {"mode": value}
        if isinstance(value, str)
        else {"mode": "mirror" if value else "off"}
        if isinstance(value, bool)
        else None
    ),
    "feature.network.outgoing": lambda value: (
        {"tcp": value, "udp": value} if isinstance(value, bool) else None
    ),
    "feature.network.dns": lambda value: {"enabled": value} if isinstance(value, bool) else None,
    "agent.image": lambda value: (
        dict(zip(("registry", "tag"), value.rsplit(":", 1), strict=False))
        if isinstance(value, str)
        else None
    ),
}


def is_set(raw: Mapping[str, Any], key: str) -> bool:
    """Whether the document gives `key` (or the section holding it) a value."""
    value: Any = raw
    for name in key.split("."):
        if not isinstance(value, Mapping) or value.get(name) is None:
            return False
        value = value[name]
    return True


def apply_settings(raw: dict[str, Any], settings: list[tuple[str, Any, str]]) -> dict[str, str]:
    """Set each dotted key in `raw` (in order: later wins); -> {key: where it came from}."""
    sources: dict[str, str] = {}
    for key, value, source in settings:
        parts = key.split(".")
        section: MutableMapping[str, Any] = raw
        for depth, name in enumerate(parts[:-1]):
            child = section.get(name)
            if not isinstance(child, Mapping):
                expand = _EXPANSIONS.get(".".join(parts[: depth + 1]))
                expanded = expand(child) if expand is not None and child is not None else None
                child = expanded if expanded is not None else {}
            section[name] = child = dict(child)
            section = child
        section[parts[-1]] = value
        sources[key] = source
    return sources
