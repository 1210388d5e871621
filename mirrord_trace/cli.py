"""The `mirrord-trace` command line (click).

Every user error ends the command with exactly one line on stderr,
`mirrord-trace: error: <what is wrong> (<what to do>)`, and a non-zero exit status: 2 for
usage and configuration errors, 127 for a program that cannot be found (like a shell), 1 when
the target cannot be reached, 130 when interrupted during start-up.

What `exec` does is in mirrord_trace.exec_run. Here, only click and the configuration are
imported up front; the supervisor, the local target and anything heavy where needed.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click

from mirrord_trace import __version__
from mirrord_trace.config import CliOverrides, ConfigError, FsMode, load_config
from mirrord_trace.env import EnvPatternError, split_patterns
from mirrord_trace.exec_flags import flag_settings, mirrord_exec_options
from mirrord_trace.exec_run import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    PROG,
    UserError,
    fail,
    run_exec,
)
from mirrord_trace.ls_output import TARGET_TYPES as LS_TARGET_TYPES
from mirrord_trace.targets import TARGET_FORMS, Target, TargetParseError, parse_target

DEFAULT_CONFIG_FILE = "./.mirrord/mirrord.json"  # a bare -f, as in mirrord


class _HintedBadParameter(click.BadParameter):
    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


def _usage_message_and_hint(error: click.UsageError) -> tuple[str, str]:
    command = error.ctx.command_path if error.ctx is not None else PROG
    hint = getattr(error, "hint", None) or f"run '{command} --help' for usage"
    # click appends "(Did you mean ...?)" to the message; it belongs in the hint.
    possibilities = getattr(error, "possibilities", None)
    if possibilities:
        return error.message, f"did you mean {' or '.join(possibilities)}? {hint}"
    return error.format_message(), hint


# Subcommands whose modules are slow to import (the sandbox pulls in pyroute2, ~0.4 s): they
# are added on first use, so `exec` does not pay for them. name -> (module, attribute).
_LAZY_COMMANDS = {
    "sandbox": ("mirrord_trace.sandbox.cli", "sandbox_group"),
    "verify-config": ("mirrord_trace.config.commands", "verify_config_command"),
    "port-forward": ("mirrord_trace.port_forward", "port_forward_command"),
    "completions": ("mirrord_trace.completions", "completions_command"),
    "dump": ("mirrord_trace.dump", "dump_command"),
    "agent-image": ("mirrord_trace.agent_image.cli", "agent_image_group"),
}


class _OneLineErrorGroup(click.Group):
    """click prints usage errors over several lines; we print one, and keep --help as is."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _LAZY_COMMANDS and cmd_name not in self.commands:
            import importlib

            module_name, attribute = _LAZY_COMMANDS[cmd_name]
            # Equivalent to main.add_command(sandbox_group, "sandbox"), done on first use.
            self.add_command(getattr(importlib.import_module(module_name), attribute), cmd_name)
        return super().get_command(ctx, cmd_name)

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            status = super().main(args, prog_name or PROG, complete_var, False, **extra)
        except click.exceptions.NoArgsIsHelpError as error:
            error.show()  # bare `mirrord-trace`: the normal help text
            sys.exit(error.exit_code)
        except UserError as error:
            fail(error.format_message(), error.hint, error.exit_code)
        except click.UsageError as error:
            fail(*_usage_message_and_hint(error), EXIT_USAGE)
        except click.ClickException as error:
            fail(error.format_message(), f"see '{PROG} --help'", error.exit_code)
        except click.Abort:
            fail("interrupted", "nothing more was done", EXIT_INTERRUPTED)
        sys.exit(status if isinstance(status, int) else 0)


class _TargetType(click.ParamType):
    name = "TARGET"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return parse_target(value)
        except TargetParseError as error:
            raise _HintedBadParameter(str(error), f"use one of {TARGET_FORMS}") from None


def _check_namespace(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    from mirrord_trace.config.parse import parse_namespace  # the validators: only with -n

    try:
        return parse_namespace(value, "--target-namespace")
    except ConfigError as error:
        raise click.BadParameter(error.message) from None


def _check_env_patterns(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> str | None:
    if value is not None:
        try:
            split_patterns(value)
        except EnvPatternError as error:
            raise _HintedBadParameter(str(error), "give names separated by ';'") from None
    return value


@click.group(cls=_OneLineErrorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name=PROG, message="%(prog)s %(version)s")
def main() -> None:
    """Run a local program in the context of a remote target, at the syscall boundary."""


@main.command(
    "exec",
    context_settings={"allow_interspersed_args": False, "ignore_unknown_options": False},
)
@click.option("-t", "--target", type=_TargetType(), help=f"Target: {TARGET_FORMS}.")
@click.option(
    "-n", "--target-namespace", callback=_check_namespace, help="Namespace of the target."
)
@click.option("--context", "kube_context", help="Kubernetes context from the kubeconfig.")
@click.option(
    "-f",
    "--config-file",
    metavar="FILE",
    is_flag=False,
    flag_value=DEFAULT_CONFIG_FILE,
    help=f"mirrord-style config (.json, .yaml, .toml; '-': stdin; alone: {DEFAULT_CONFIG_FILE}).",
)
@click.option(
    "--trace", "trace_path", metavar="FILE|-", help="Write a syscall trace ('-': stderr)."
)
@click.option(
    "--fs-mode",
    type=click.Choice([*(mode.value for mode in FsMode), "local-with-overrides"]),
    help="File operations: local, localwithoverrides (local-with-overrides), read or write.",
)
@click.option(
    "-s",
    "--override-env-vars-include",
    "env_include",
    metavar="PATTERNS",
    callback=_check_env_patterns,
    help="Import only these remote variables (';'-separated, * and ? wildcards).",
)
@click.option(
    "-x",
    "--override-env-vars-exclude",
    "env_exclude",
    metavar="PATTERNS",
    callback=_check_env_patterns,
    help="Do not import these remote variables (';'-separated, * and ? wildcards).",
)
@click.option("--no-outgoing", is_flag=True, help="Send no outgoing traffic through the target.")
@click.option("--no-tcp-outgoing", is_flag=True, help="Keep outgoing TCP local.")
@click.option("--no-udp-outgoing", is_flag=True, help="Keep outgoing UDP local.")
@click.option("--no-remote-dns", is_flag=True, help="Resolve names locally.")
@click.option("--steal", is_flag=True, help="Steal incoming traffic instead of mirroring it.")
@click.option(
    "-e", "--ephemeral-container", is_flag=True, help="Run the agent as an ephemeral container."
)
@click.option(
    "--agent-ttl", type=click.IntRange(0, 65535), help="Seconds the agent pod stays after exit."
)
@mirrord_exec_options
@click.option(
    "--exit-with-program",
    is_flag=True,
    help="When the program exits, end the processes it left running instead of waiting.",
)
@click.option(
    "--engine",
    type=click.Choice(["ptrace", "notify"]),
    help="Interception engine (default: notify for debuggers, else ptrace; docs/debugging.md).",
)
@click.argument("program", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def exec_command(
    ctx: click.Context,
    target: Target | None,
    target_namespace: str | None,
    kube_context: str | None,
    config_file: str | None,
    trace_path: str | None,
    fs_mode: str | None,
    env_include: str | None,
    env_exclude: str | None,
    no_outgoing: bool,
    no_tcp_outgoing: bool,
    no_udp_outgoing: bool,
    no_remote_dns: bool,
    steal: bool,
    ephemeral_container: bool,
    agent_ttl: int | None,
    exit_with_program: bool,
    engine: str | None,
    program: tuple[str, ...],
    key: str | None,
    no_telemetry: bool,
    disable_version_check: bool,
    **mirrord_flags: Any,
) -> int:
    """Run PROGRAM [ARGS]... in the context of the target.

    \b
    mirrord-trace exec --target pid/1234 -- ./server --port 8080
    """
    if not program:
        raise click.UsageError("missing PROGRAM to run", ctx)
    return run_exec(
        program,
        target=target,
        target_namespace=target_namespace,
        kube_context=kube_context,
        config_file=config_file,
        trace_path=trace_path,
        fs_mode=None if fs_mode is None else fs_mode.replace("-", ""),
        env_include=env_include,
        env_exclude=env_exclude,
        no_outgoing=no_outgoing,
        no_tcp_outgoing=no_tcp_outgoing,
        no_udp_outgoing=no_udp_outgoing,
        no_remote_dns=no_remote_dns,
        steal=steal,
        ephemeral_container=ephemeral_container,
        agent_ttl=agent_ttl,
        key=key,
        settings=flag_settings(mirrord_flags),
        exit_with_program=exit_with_program,
        engine=engine,
    )


@main.command("ls")
@click.option(
    "-n", "--namespace", callback=_check_namespace, help="Namespace (default: the context's)."
)
@click.option("--context", "kube_context", help="Kubernetes context from the kubeconfig.")
@click.option(
    "-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.option(
    "-f", "--config-file", metavar="FILE", help="mirrord-style config (kubeconfig, context)."
)
@click.option(
    "-t",
    "--target-type",
    "target_types",
    multiple=True,
    type=click.Choice(LS_TARGET_TYPES),
    help="Only targets of this type (repeatable).",
)
def ls_command(
    namespace: str | None,
    kube_context: str | None,
    output: str,
    config_file: str | None,
    target_types: tuple[str, ...],
) -> None:
    """List the Kubernetes targets (pods, containers, deployments) you can pick.

    With MIRRORD_LS_RICH_OUTPUT=true, mirrord's JSON object (targets, namespaces).
    """
    from mirrord_trace.ls_output import LsError, kept, render, wanted_types

    try:
        types = wanted_types(target_types)
        cfg = load_config(
            config_file, CliOverrides(target_namespace=namespace, kube_context=kube_context)
        )
    except ConfigError as error:
        raise UserError(str(error), error.hint) from None
    except LsError as error:
        raise UserError(str(error), 'give e.g. ["pod", "deployment"]') from None
    from mirrord_trace.kube import KubeError, connect, list_targets
    from mirrord_trace.kube.listing import list_namespaces

    try:
        cluster = connect(
            cfg.kubeconfig,
            cfg.kube_context,
            accept_invalid_certificates=cfg.accept_invalid_certificates,
        )
        in_namespace = cfg.target.namespace or cluster.default_namespace
        targets = kept(list_targets(cluster, in_namespace), types)
        text = render(targets, output, in_namespace, lambda: list_namespaces(cluster))
    except KubeError as error:
        raise UserError(error.message, error.hint, EXIT_FAILURE) from None
    if text:
        click.echo(text)
