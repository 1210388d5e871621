"""Command-line flags applied on top of the file's configuration: a flag always wins."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from mirrord_trace.config.model import Config, FsMode, IncomingMode
from mirrord_trace.targets import Target


@dataclass(frozen=True, slots=True)
class CliOverrides:
    """The `exec` flags that set configuration keys; None/False means "flag not given".

    -s/-x are not here: they go to mirrord_trace.env.build_program_env directly.
    """

    target: Target | None = None  # -t/--target            -> target.path
    target_namespace: str | None = None  # -n            -> target.namespace
    kube_context: str | None = None  # --context         -> kube_context
    fs_mode: FsMode | None = None  # --fs-mode           -> feature.fs.mode
    no_outgoing: bool = False  # --no-outgoing           -> outgoing.tcp = udp = false
    no_tcp_outgoing: bool = False  # --no-tcp-outgoing   -> outgoing.tcp = false
    no_udp_outgoing: bool = False  # --no-udp-outgoing   -> outgoing.udp = false
    no_remote_dns: bool = False  # --no-remote-dns       -> dns.enabled = false
    steal: bool = False  # --steal                       -> incoming.mode = steal
    ephemeral_container: bool = False  # --ephemeral-container -> agent.ephemeral = true
    agent_ttl: int | None = None  # --agent-ttl          -> agent.ttl
    key: str | None = None  # -k/--key                   -> key (also {{ key }} in templates)
    # The other flags, as mirrord's CLI passes them on: (dotted key, value, flag), set over
    # the file's keys and the MIRRORD_* variables before validation (one code path for all).
    settings: tuple[tuple[str, Any, str], ...] = ()


def apply_overrides(cfg: Config, flags: CliOverrides) -> Config:
    target = cfg.target
    if flags.target is not None:
        target = replace(target, path=flags.target)
    if flags.target_namespace is not None:
        target = replace(target, namespace=flags.target_namespace)

    feature = cfg.feature
    if flags.fs_mode is not None:
        feature = replace(feature, fs=replace(feature.fs, mode=flags.fs_mode))

    network = feature.network
    outgoing = network.outgoing
    if flags.no_outgoing or flags.no_tcp_outgoing:
        outgoing = replace(outgoing, tcp=False)
    if flags.no_outgoing or flags.no_udp_outgoing:
        outgoing = replace(outgoing, udp=False)
    dns = replace(network.dns, enabled=False) if flags.no_remote_dns else network.dns
    incoming = network.incoming
    if flags.steal:
        incoming = replace(incoming, mode=IncomingMode.STEAL)
    feature = replace(
        feature, network=replace(network, incoming=incoming, outgoing=outgoing, dns=dns)
    )

    agent = cfg.agent
    if flags.ephemeral_container:
        agent = replace(agent, ephemeral=True)
    if flags.agent_ttl is not None:
        agent = replace(agent, ttl=flags.agent_ttl)

    return replace(
        cfg,
        target=target,
        kube_context=flags.kube_context if flags.kube_context is not None else cfg.kube_context,
        feature=feature,
        agent=agent,
    )
