"""What the commands that only need an agent session (dump, port-forward) share: the options
that name a target and its configuration, and the configuration loaded from them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, TypeVar

import click

if TYPE_CHECKING:
    from mirrord_trace.config import Config

F = TypeVar("F", bound=Callable[..., object])

_OPTIONS = (
    click.option(
        "-t", "--target",
        help="Target: pid/N, pod/NAME[/container/C], deployment/NAME, rollout/NAME.",
    ),
    click.option("-n", "--target-namespace", help="Namespace of the target."),
    click.option("--context", "kube_context", help="Kubernetes context from the kubeconfig."),
    click.option(
        "-f", "--config-file", metavar="FILE", is_flag=False,
        flag_value="./.mirrord/mirrord.json",
        help="mirrord-style config (target, agent, kubeconfig).",
    ),
)  # fmt: skip


def target_options(command: F) -> F:
    """-t, -n, --context and -f, as `exec` names them."""
    for option in reversed(_OPTIONS):
        command = option(command)
    return command


def load_target_config(
    command: str,
    target: str | None,
    target_namespace: str | None,
    kube_context: str | None,
    config_file: str | None,
) -> Config:
    """The configuration from the file and the flags; it must name a target. The program's
    environment is not needed by these commands: the agent is not asked for it."""
    from mirrord_trace.config import ConfigError, load_config
    from mirrord_trace.config.model import EnvConfig
    from mirrord_trace.config.overrides import CliOverrides
    from mirrord_trace.exec_run import UserError, show_warnings
    from mirrord_trace.targets import TARGET_FORMS, Targetless, TargetParseError, parse_target

    try:
        parsed = parse_target(target) if target is not None else None
    except TargetParseError as error:
        raise UserError(str(error), f"use one of {TARGET_FORMS}") from None
    overrides = CliOverrides(
        target=parsed, target_namespace=target_namespace, kube_context=kube_context
    )
    try:
        cfg = load_config(config_file, overrides)
    except ConfigError as error:
        raise UserError(str(error), error.hint) from None
    show_warnings(cfg.warnings)
    if isinstance(cfg.target.resolved, Targetless):
        raise UserError(
            f"{command} needs a target",
            "give one with -t, in the config file, or in MIRRORD_IMPERSONATED_TARGET",
        )
    return replace(cfg, feature=replace(cfg.feature, env=EnvConfig(enabled=False)))
