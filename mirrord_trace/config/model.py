"""The validated configuration: frozen dataclasses whose fields mirror mirrord's JSON keys.

Defaults are mirrord's: fs mode read, incoming mirror, outgoing TCP and UDP remote, remote DNS
on, remote environment imported. Values are already parsed (regexes compiled, filter entries
typed), so the code that uses them never re-validates.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from mirrord_trace.targets import Target, Targetless

if TYPE_CHECKING:  # only named in annotations; the filter grammar is loaded with a file
    from mirrord_trace.config.filters import AddressFilter


class FsMode(StrEnum):
    LOCAL = "local"
    LOCAL_WITH_OVERRIDES = "localwithoverrides"
    READ = "read"
    WRITE = "write"


class IncomingMode(StrEnum):
    MIRROR = "mirror"
    STEAL = "steal"
    OFF = "off"


class ConcurrentSteal(StrEnum):
    """feature.network.incoming.on_concurrent_steal: when another session steals the port."""

    ABORT = "abort"  # the program's listen() fails, saying why
    CONTINUE = "continue"  # the program listens on this machine only
    OVERRIDE = "override"  # new connections come to this session instead


class FilterSide(StrEnum):
    """Which side the matching traffic goes to; everything else goes to the other side."""

    REMOTE = "remote"
    LOCAL = "local"


IMAGE_PULL_POLICIES = ("IfNotPresent", "Always", "Never")
# What the agent adds to the runtime's defaults (agent.disabled_capabilities takes some away).
AGENT_CAPABILITIES = ("NET_ADMIN", "SYS_PTRACE", "SYS_ADMIN")


def _empty_mapping() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class EnvConfig:
    """feature.env. `include=None` imports every remote variable (except the fixed set that is
    never imported, see mirrord_trace.env); patterns use `*` and `?`."""

    enabled: bool = True
    include: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    override: Mapping[str, str] = field(default_factory=_empty_mapping)
    unset: tuple[str, ...] = ()
    # A .env file whose variables win over the target's (override still wins over it).
    env_file: str | None = None
    # (regex on the name, new value): the first match replaces a target variable's value.
    mapping: tuple[tuple[re.Pattern[str], str], ...] = ()


@dataclass(frozen=True, slots=True)
class FsConfig:
    """feature.fs. Pattern lists are matched case-insensitively against absolute paths."""

    mode: FsMode = FsMode.READ
    read_write: tuple[re.Pattern[str], ...] = ()
    read_only: tuple[re.Pattern[str], ...] = ()
    local: tuple[re.Pattern[str], ...] = ()
    not_found: tuple[re.Pattern[str], ...] = ()
    # (regex, replacement in re.sub's syntax): the path the program names is rewritten first.
    mapping: tuple[tuple[re.Pattern[str], str], ...] = ()


@dataclass(frozen=True, slots=True)
class HttpFilterConfig:
    """feature.network.incoming.http_filter (only used when stealing).

    `wire` is the filter as the agent takes it (mirrord_trace.config.http_filter), None when no
    filter is set; `ports` None means every stolen port (mirrord 3.250)."""

    wire: Mapping[str, Any] | None = None
    ports: tuple[int, ...] | None = None

    @property
    def is_set(self) -> bool:
        return self.wire is not None

    def applies_to(self, port: int) -> bool:
        return self.is_set and (self.ports is None or port in self.ports)


@dataclass(frozen=True, slots=True)
class IncomingConfig:
    """feature.network.incoming. `ports=None` means every port not in `ignore_ports`."""

    mode: IncomingMode = IncomingMode.MIRROR
    http_filter: HttpFilterConfig = HttpFilterConfig()
    port_mapping: tuple[tuple[int, int], ...] = ()
    listen_ports: tuple[tuple[int, int], ...] = ()
    ignore_localhost: bool = False
    ignore_ports: frozenset[int] = frozenset()
    ports: frozenset[int] | None = None
    on_concurrent_steal: ConcurrentSteal = ConcurrentSteal.ABORT


@dataclass(frozen=True, slots=True)
class TrafficFilter:
    """`filter: {remote: [...]}` or `filter: {local: [...]}`."""

    side: FilterSide
    entries: tuple[AddressFilter, ...]


@dataclass(frozen=True, slots=True)
class OutgoingConfig:
    """feature.network.outgoing."""

    tcp: bool = True
    udp: bool = True
    ignore_localhost: bool = False
    filter: TrafficFilter | None = None
    # Unix stream socket paths (regexes, searched) connected to in the target.
    unix_streams: tuple[re.Pattern[str], ...] = ()


@dataclass(frozen=True, slots=True)
class DnsConfig:
    """feature.network.dns."""

    enabled: bool = True
    filter: TrafficFilter | None = None


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    incoming: IncomingConfig = IncomingConfig()
    outgoing: OutgoingConfig = OutgoingConfig()
    dns: DnsConfig = DnsConfig()
    ipv6: bool = True  # false: socket(AF_INET6, ...) fails with EAFNOSUPPORT


@dataclass(frozen=True, slots=True)
class FeatureConfig:
    env: EnvConfig = EnvConfig()
    fs: FsConfig = FsConfig()
    network: NetworkConfig = NetworkConfig()
    hostname: bool = True  # the program sees the target's host name (uname)


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """agent: how the agent pod / ephemeral container is created (Kubernetes targets).

    `image=None` means this release's default agent image; `namespace=None` the target's.
    """

    image: str | None = None
    image_pull_policy: str = "IfNotPresent"
    namespace: str | None = None
    ttl: int = 1
    ephemeral: bool = False
    privileged: bool = False
    startup_timeout: int = 60
    communication_timeout: int | None = None
    network_interface: str | None = None
    # Cut the target's open connections to a port when its steal starts (they reconnect).
    flush_connections: bool = False
    # The agent pod (a Job's pod; an ephemeral container has no pod of its own). Kubernetes
    # values are in the API's shape. tolerations=None: tolerate every taint of the node.
    labels: Mapping[str, str] = field(default_factory=_empty_mapping)
    annotations: Mapping[str, str] = field(default_factory=_empty_mapping)
    tolerations: tuple[Mapping[str, object], ...] | None = None
    resources: Mapping[str, object] | None = None
    priority_class: str | None = None
    service_account: str | None = None
    image_pull_secrets: tuple[str, ...] = ()
    security_context: Mapping[str, object] | None = None
    disabled_capabilities: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class TargetConfig:
    """target. `path=None` (no target given) runs targetless."""

    path: Target | None = None
    namespace: str | None = None

    @property
    def resolved(self) -> Target:
        return self.path if self.path is not None else Targetless()


@dataclass(frozen=True, slots=True)
class Config:
    """`warnings`: one line per key of the file that does nothing here (not compared)."""

    target: TargetConfig = TargetConfig()
    kubeconfig: str | None = None
    kube_context: str | None = None
    # "ptrace" or "notify" (docs/debugging.md); None: notify for a debugger, else ptrace.
    engine: str | None = None
    feature: FeatureConfig = FeatureConfig()
    agent: AgentConfig = AgentConfig()
    key: str | None = None  # mirrord's session key (also `{{ key }}` in templates)
    # Processes that run untouched (mirrord_trace.skipped_processes).
    skip_processes: tuple[str, ...] = ()
    skip_build_tools: bool = True
    skip_extra_build_tools: tuple[str, ...] = ()
    # None: as the kubeconfig says; True: do not verify the API server's certificate.
    accept_invalid_certificates: bool | None = None
    warnings: tuple[str, ...] = field(default=(), compare=False)
