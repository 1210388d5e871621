"""Every key of mirrord 3.250's configuration and what mirrord-trace does with it.

mirrord users bring their files unchanged, so a key mirrord knows is never "unknown" here:

- WORKS: read and honoured (mirrord_trace.config.parse turns it into the typed Config);
- IGNORED: accepted with a warning naming it and saying why it does nothing here (it tunes a
  part of mirrord that mirrord-trace does not have: the injected layer, the proxies, telemetry);
- NOT_YET: accepted with a warning that mirrord-trace does not support it yet;
- OPERATOR: the feature needs mirrord's operator (mirrord for Teams); the file fails, with an
  error saying so, unless the key is given its "off" value;
- REJECTED: refused with an error saying it is not supported (where ignoring it would do
  something else than what the user asked, e.g. steal requests a filter would have kept).

The table was made against mirrord 3.250's configuration schema (230 dotted keys, counting
the target fields mirrord also takes directly under `target`); tests/test_config_keys.py holds
each status to its behaviour, and docs/configuration.md's table of keys is generated from it
(python -m mirrord_trace.config.docs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    WORKS = "works"
    IGNORED = "warns and ignores"
    NOT_YET = "warns: not yet supported"
    OPERATOR = "needs mirrord's operator"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class KeyInfo:
    status: Status
    why: str = ""
    # A value that asks for nothing beyond what mirrord-trace does anyway: no warning/error
    # (e.g. `"telemetry": false`, `"operator": false`, `"copy_target": {"enabled": false}`).
    inert: Callable[[Any], bool] | None = None


LAYER = "tunes mirrord's injected layer, which mirrord-trace does not have (it traces syscalls)"
PROXY = "mirrord's local proxies; mirrord-trace's supervisor talks to the agent directly"
CONTAINER = "settings of `mirrord container`, which mirrord-trace does not have"
AGENT_INTERNAL = "tunes mirrord's own agent; mirrord-trace's agent has no such setting"
HTTP_FILTER_MISSING = (
    "jq filters are not supported by mirrord-trace; use header_filter (a regex on 'Name: value')"
)
HANDLERS = "not supported by mirrord-trace yet"


def _off(value: Any) -> bool:
    """false, null, an empty list/mapping, or a mapping whose `enabled` is false."""
    if value is None or value is False or value == [] or value == {}:
        return True
    return isinstance(value, dict) and value.get("enabled") is False


def _is(expected: Any) -> Callable[[Any], bool]:
    return lambda value: value == expected


W = KeyInfo(Status.WORKS)


def _group(prefix: str, names: str, info: KeyInfo) -> dict[str, KeyInfo]:
    return {f"{prefix}.{name}": info for name in names.split()}


_AGENT_IGNORED = KeyInfo(Status.IGNORED, AGENT_INTERNAL)
_OPERATOR = KeyInfo(Status.OPERATOR, "", _off)
_OPERATOR_TARGET = KeyInfo(
    Status.OPERATOR, "this kind of target needs mirrord's operator; use pod/ or deployment/"
)
_LAYER = KeyInfo(Status.IGNORED, LAYER)

KEYS: dict[str, KeyInfo] = {
    "accept_invalid_certificates": W,
    "agent": W,
    "agent.annotations": W,
    "agent.check_out_of_pods": KeyInfo(
        Status.IGNORED,
        "mirrord-trace runs the agent on the target's node and reports why it cannot start",
    ),
    "agent.clean_iptables_on_start": KeyInfo(
        Status.IGNORED, "mirrord-trace's agent always removes only its own iptables rules"
    ),
    "agent.communication_timeout": W,
    "agent.disable_mesh_sidecar_injection": KeyInfo(
        Status.IGNORED, "mirrord-trace's agent pod always opts out of mesh sidecar injection"
    ),
    "agent.disabled_capabilities": W,
    **{
        key: KeyInfo(
            Status.IGNORED,
            "the program's own resolver sends its queries through the agent, with its own "
            "timeout and attempts (the target's resolv.conf); the agent does not resolve for it",
        )
        for key in ("agent.dns", "agent.dns.attempts", "agent.dns.timeout")
    },
    "agent.ephemeral": W,
    "agent.exclude_from_mesh": _AGENT_IGNORED,
    "agent.external_ip_fix": _AGENT_IGNORED,
    "agent.flush_connections": W,
    "agent.http_detection_timeout": _AGENT_IGNORED,
    "agent.image": W,
    "agent.image.registry": W,
    "agent.image.tag": W,
    "agent.image_pull_policy": W,
    "agent.image_pull_secrets": W,
    "agent.inject_headers": _AGENT_IGNORED,
    "agent.jaq_time_limit": _AGENT_IGNORED,
    "agent.json_log": KeyInfo(
        Status.IGNORED, "mirrord-trace's agent reports errors as one line, not as logs"
    ),
    "agent.labels": W,
    "agent.log_level": KeyInfo(
        Status.IGNORED, "mirrord-trace's agent reports errors as one line and logs nothing else"
    ),
    "agent.max_body_buffer_size": _AGENT_IGNORED,
    "agent.max_body_buffer_timeout": _AGENT_IGNORED,
    "agent.metrics": _AGENT_IGNORED,
    "agent.namespace": W,
    "agent.nftables": _AGENT_IGNORED,
    "agent.node_selector": KeyInfo(
        Status.IGNORED,
        "mirrord applies it to targetless agents only; mirrord-trace's agent always runs on the "
        "target's node (targetless runs need no agent)",
    ),
    "agent.override_cache_control": _AGENT_IGNORED,
    "agent.priority_class": W,
    "agent.privileged": W,
    "agent.resources": W,
    "agent.resources.claims": W,
    "agent.resources.limits": W,
    "agent.resources.requests": W,
    "agent.security_context": W,
    **_group(
        "agent.security_context",
        "app_armor_profile app_armor_profile.localhost_profile app_armor_profile.type "
        "seccomp_profile seccomp_profile.localhost_profile seccomp_profile.type",
        W,
    ),
    "agent.service_account": W,
    "agent.startup_timeout": W,
    "agent.tolerations": W,
    "agent.ttl": W,
    "api": KeyInfo(Status.IGNORED, "mirrord's session monitor API; mirrord-trace has none"),
    "baggage": KeyInfo(Status.IGNORED, "OpenTelemetry baggage sent to mirrord's operator"),
    "ci": KeyInfo(Status.IGNORED, "settings of `mirrord ci`, which mirrord-trace does not have"),
    "ci.output_dir": KeyInfo(Status.IGNORED, "settings of `mirrord ci`"),
    "container": KeyInfo(Status.IGNORED, CONTAINER),
    **_group(
        "container",
        "cli_extra_args cli_image cli_image_lib_path cli_prevent_cleanup cli_tls_path "
        "host_gateway_detection override_host_ip platform",
        KeyInfo(Status.IGNORED, CONTAINER),
    ),
    "experimental": _LAYER,
    **_group(
        "experimental",
        "applev browser_extension_config disable_reuseaddr dlopen_cgo enable_exec_hooks_linux "
        "go_asmcgocall guard_std_fds hide_ipv6_interfaces idle_local_http_connection_timeout "
        "ignore_system_proxy_config latency latency.receive_delay latency.transmit_delay "
        "non_blocking_tcp_connect sip_log_destination sip_utils tcp_ping4_mock "
        "trust_any_certificate use_dev_null",
        _LAYER,
    ),
    "external_proxy": KeyInfo(Status.IGNORED, PROXY),
    **_group(
        "external_proxy",
        "host_ip idle_timeout json_log log_destination log_level start_idle_timeout tls_enable",
        KeyInfo(Status.IGNORED, PROXY),
    ),
    "feature": W,
    "feature.copy_target": _OPERATOR,
    **_group(
        "feature.copy_target",
        "enabled exclude_containers exclude_init_containers scale_down",
        _OPERATOR,
    ),
    "feature.db_branches": _OPERATOR,
    "feature.env": W,
    **_group("feature.env", "env_file exclude include mapping override unset", W),
    "feature.env.load_from_process": KeyInfo(
        Status.IGNORED, "the remote environment is always read before the program starts"
    ),
    "feature.fs": W,
    **_group("feature.fs", "local mode not_found read_only read_write", W),
    "feature.fs.mapping": W,
    "feature.fs.readonly_file_buffer": KeyInfo(
        Status.IGNORED, "mirrord-trace reads remote files in whole requests, not buffered"
    ),
    "feature.hostname": W,
    "feature.magic": KeyInfo(Status.IGNORED, "mirrord's per-framework workarounds"),
    "feature.magic.auto_mount": KeyInfo(
        Status.IGNORED, "files are read from the target anyway (feature.fs)"
    ),
    "feature.magic.aws": KeyInfo(Status.IGNORED, "mirrord's AWS environment workaround"),
    "feature.magic.turbo": KeyInfo(Status.IGNORED, "mirrord's Next.js layer workaround"),
    "feature.network": W,
    "feature.network.dns": W,
    **_group("feature.network.dns", "enabled filter filter.local filter.remote", W),
    "feature.network.incoming": W,
    **_group(
        "feature.network.incoming",
        "http_filter http_filter.header_filter http_filter.path_filter http_filter.ports "
        "ignore_localhost ignore_ports listen_ports mode port_mapping ports",
        W,
    ),
    **_group(
        "feature.network.incoming.http_filter",
        "all_of any_of body_filter body_filter.body body_filter.matches body_filter.query "
        "method_filter",
        W,
    ),
    "feature.network.incoming.http_filter.header_filter_jq": KeyInfo(
        Status.REJECTED, HTTP_FILTER_MISSING
    ),
    "feature.network.incoming.https_delivery": _OPERATOR,
    **_group(
        "feature.network.incoming.https_delivery",
        "protocol server_cert server_name trust_roots",
        _OPERATOR,
    ),
    "feature.network.incoming.tls_delivery": _OPERATOR,
    **_group(
        "feature.network.incoming.tls_delivery",
        "protocol server_cert server_name trust_roots",
        _OPERATOR,
    ),
    "feature.network.incoming.on_concurrent_steal": W,
    "feature.network.ipv6": W,
    "feature.network.outgoing": W,
    **_group(
        "feature.network.outgoing",
        "filter filter.local filter.remote ignore_localhost tcp udp",
        W,
    ),
    "feature.network.outgoing.unix_streams": W,
    "feature.preview": _OPERATOR,
    **_group(
        "feature.preview",
        "config_mounts creation_timeout_secs idle idle.sleep_after_secs idle.start_idle "
        "idle.wake_timeout_secs image labels labels.exclude labels.include replicas "
        "secret_mounts ttl_mins ttl_secs",
        _OPERATOR,
    ),
    "feature.split_queues": _OPERATOR,
    "internal_proxy": KeyInfo(Status.IGNORED, PROXY),
    **_group(
        "internal_proxy",
        "idle_timeout json_log log_destination log_level ping_interval "
        "process_logging_interval socket_timeout start_idle_timeout",
        KeyInfo(Status.IGNORED, PROXY),
    ),
    "key": W,
    "kube_context": W,
    "kubeconfig": W,
    "multi_cluster": KeyInfo(Status.OPERATOR, "", _is(False)),
    "operator": KeyInfo(Status.OPERATOR, "", _is(False)),
    "profile": _OPERATOR,
    "sip_binaries": KeyInfo(Status.IGNORED, "macOS System Integrity Protection: not on Linux"),
    "skip_sip": KeyInfo(Status.IGNORED, "macOS System Integrity Protection: not on Linux"),
    "skip_build_tools": W,
    "skip_extra_build_tools": W,
    "skip_processes": W,
    "startup_retry": KeyInfo(Status.IGNORED, "mirrord's retries of Kubernetes API calls"),
    **_group(
        "startup_retry",
        "max_ms max_retries min_ms",
        KeyInfo(Status.IGNORED, "mirrord's retries of Kubernetes API calls"),
    ),
    "target": W,
    "target.namespace": W,
    "target.path": W,
    "telemetry": KeyInfo(Status.IGNORED, "mirrord-trace sends no telemetry", _is(False)),
    "traceparent": KeyInfo(
        Status.IGNORED, "OpenTelemetry trace context sent to mirrord's operator"
    ),
    "use_proxy": KeyInfo(
        Status.IGNORED, "mirrord-trace talks to the cluster with the kubeconfig's settings"
    ),
}

# A target is a path (`target.path.pod`) or, as mirrord also accepts, the path's fields
# directly under `target` (`target.pod`).
for _prefix in ("target", "target.path"):
    KEYS.update(_group(_prefix, "pod deployment rollout container", W))
    KEYS.update(
        _group(_prefix, "cron_job job labels replica_set service stateful_set", _OPERATOR_TARGET)
    )

OPERATOR_WHY = (
    "needs mirrord's operator (mirrord for Teams), which mirrord-trace does not use; "
    "remove the key to run without it"
)


def info(key: str) -> KeyInfo | None:
    return KEYS.get(key)


def counts() -> dict[Status, int]:
    """How many keys have each status (docs/configuration.md and the report show these)."""
    totals = dict.fromkeys(Status, 0)
    for entry in KEYS.values():
        totals[entry.status] += 1
    return totals
