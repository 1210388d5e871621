"""What `mirrord-trace exec` does once its arguments are parsed: load the configuration, start
the agent for the target (if any), build the program's environment and run the program traced.

The click command line (mirrord_trace.cli) parses the arguments and calls `run_exec`.

Every user error is a UserError, shown by `fail` as exactly one line on stderr,
`mirrord-trace: error: <what is wrong> (<what to do>)`.
"""

from __future__ import annotations

import os
import sys
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from mirrord_trace.config import Config, ConfigError, FsMode, load_config
from mirrord_trace.env import build_program_env
from mirrord_trace.signal_mask import termination_interrupts
from mirrord_trace.targets import KubernetesTarget, PidTarget, Target

if TYPE_CHECKING:
    from mirrord_trace.trace_sink import TraceSink

PROG = "mirrord-trace"
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_PROGRAM_NOT_FOUND = 127
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """A problem the user can fix; shown as one line with a hint, never as a traceback."""

    def __init__(self, message: str, hint: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code

    def format_message(self) -> str:
        return self.message

    def __str__(self) -> str:
        return self.message


def fail(message: str, hint: str, exit_code: int) -> NoReturn:
    """Print the one error line and exit with `exit_code`."""
    import click  # click.echo's stream handling, as on every other output path; errors only

    # Multi-line messages (click's, or a library's) are folded: the contract is one line.
    message = " ".join(message.split()).removesuffix(".")
    line = f"{PROG}: error: {message} ({' '.join(hint.split())})"
    click.echo(line, err=True)
    sys.exit(exit_code)


def run_exec(
    program: tuple[str, ...],
    *,
    target: Target | None = None,
    target_namespace: str | None = None,
    kube_context: str | None = None,
    config_file: str | None = None,
    trace_path: str | None = None,
    fs_mode: str | None = None,
    env_include: str | None = None,
    env_exclude: str | None = None,
    no_outgoing: bool = False,
    no_tcp_outgoing: bool = False,
    no_udp_outgoing: bool = False,
    no_remote_dns: bool = False,
    steal: bool = False,
    ephemeral_container: bool = False,
    agent_ttl: int | None = None,
    key: str | None = None,
    settings: tuple[tuple[str, Any, str], ...] = (),
    exit_with_program: bool = False,
    engine: str | None = None,
) -> int:
    """Run `program` in the context of the target; the program's exit status (shell-style).

    The arguments are the `exec` flags, already validated (as the command line parses them).
    """
    flags = {
        "target": target,
        "target_namespace": target_namespace,
        "kube_context": kube_context,
        "fs_mode": FsMode(fs_mode) if fs_mode is not None else None,
        "no_outgoing": no_outgoing,
        "no_tcp_outgoing": no_tcp_outgoing,
        "no_udp_outgoing": no_udp_outgoing,
        "no_remote_dns": no_remote_dns,
        "steal": steal,
        "ephemeral_container": ephemeral_container,
        "agent_ttl": agent_ttl,
        "key": key,
        "settings": settings,
    }
    # A flag not given changes nothing, so without any the overrides are not even imported.
    given = {
        name: value
        for name, value in flags.items()
        if value is not None and value is not False and value != ()
    }
    overrides = None
    if given:
        from mirrord_trace.config.overrides import CliOverrides

        overrides = CliOverrides(**given)
    with ExitStack() as stack:
        # Until the program runs, SIGTERM/SIGHUP interrupt start-up like Ctrl-C (clean-up runs);
        # once it runs, the supervisor forwards them to it instead.
        startup = stack.enter_context(ExitStack())
        startup.enter_context(termination_interrupts())
        try:
            cfg = load_config(config_file, overrides)
        except ConfigError as error:
            raise UserError(str(error), error.hint) from None
        except KeyboardInterrupt:
            raise UserError(
                "interrupted during start-up", "the program was not started", EXIT_INTERRUPTED
            ) from None
        show_warnings(cfg.warnings)
        env_file_vars = _read_env_file(cfg.feature.env.env_file)
        resolved = cfg.target.resolved
        trace = _open_trace(trace_path, stack)
        agent, remote_env = start_session(resolved, cfg, stack)
        program_env = build_program_env(
            os.environ,
            remote_env,
            cfg.feature.env,
            cli_include=env_include,
            cli_exclude=env_exclude,
            env_file_vars=env_file_vars,
        )
        from mirrord_trace.supervisor import ProgramNotFound, TracingUnavailable, run

        watch = None
        if agent is not None:
            from mirrord_trace.agent_loss import AgentLossWatch

            watch = AgentLossWatch(agent)
        try:
            status = run(
                list(program),
                env=program_env,
                config=cfg,
                agent=agent,
                trace=trace,
                on_start=startup.close,
                exit_with_program=exit_with_program,
                engine=engine if engine is not None else cfg.engine,
            )
            if watch is not None and watch.lost is not None:
                from mirrord_trace.agent_loss import EXIT_AGENT_LOST

                return EXIT_AGENT_LOST  # the line saying why was printed when it happened
            return status
        except KeyboardInterrupt:
            raise UserError(
                "interrupted during start-up", "the program was not started", EXIT_INTERRUPTED
            ) from None
        except ProgramNotFound as error:
            from mirrord_trace.hints import program_not_found_hint

            hint = program_not_found_hint(agent, program[0] if program else "", remote_env)
            raise UserError(str(error), hint, EXIT_PROGRAM_NOT_FOUND) from None
        except TracingUnavailable as error:
            message, _, hint = str(error).partition("; ")
            raise UserError(message, hint or "run without a tracer attached", 1) from None


def show_warnings(warnings: tuple[str, ...]) -> None:
    """One line each on stderr: keys of the configuration that do nothing here."""
    if warnings:
        import click

        for warning in warnings:
            click.echo(f"{PROG}: warning: {warning}", err=True)


def _read_env_file(path: str | None) -> dict[str, str]:
    if path is None:
        return {}
    from mirrord_trace.env import EnvFileError, read_env_file

    try:
        return read_env_file(path)
    except EnvFileError as error:
        raise UserError(str(error), "fix feature.env.env_file or --env-file") from None


def start_session(
    target: Target, cfg: Config, stack: ExitStack
) -> tuple[Any | None, dict[str, str]]:
    """-> (agent client or None, the target's environment). The agent stops with `stack`."""
    if isinstance(target, KubernetesTarget):
        return _start_kube_session(target, cfg, stack)
    if not isinstance(target, PidTarget):
        return None, {}
    from mirrord_trace.agent_client import RemoteError
    from mirrord_trace.local_target import LocalAgent, TargetError

    try:
        client = stack.enter_context(LocalAgent(target.pid, meanwhile=_import_supervisor))
        remote_env: dict[str, str] = {}
        if cfg.feature.env.enabled:
            remote_env = dict(client.request("env")["env"])
    except TargetError as error:
        raise UserError(*_split_advice(str(error), target), EXIT_FAILURE) from None
    except RemoteError as error:
        raise UserError(
            f"cannot read the environment of process {target.pid}: {error.message}",
            f"check that process {target.pid} is a running user-space process "
            "(not a kernel thread) and try again",
            EXIT_FAILURE,
        ) from None
    except KeyboardInterrupt:
        raise UserError(
            "interrupted during start-up", "the program was not started", EXIT_INTERRUPTED
        ) from None
    return client, remote_env


def _import_supervisor() -> None:
    """What run() imports anyway, imported while a local agent starts."""
    import mirrord_trace.supervisor  # noqa: F401


_ADVICE_VERBS = ("check", "run", "use", "give", "start", "try", "make", "install")


def _split_advice(message: str, target: PidTarget) -> tuple[str, str]:
    """TargetError messages end with their advice ("...: check the pid"); move it to the hint."""
    what, separator, advice = message.rpartition(": ")
    if separator and advice.split(" ", 1)[0].lower() in _ADVICE_VERBS:
        return what, advice
    return message, f"check process {target.pid} with 'ps -p {target.pid}' and that you are root"


def _start_kube_session(
    target: KubernetesTarget, cfg: Config, stack: ExitStack
) -> tuple[Any, dict[str, str]]:
    """Kubernetes targets: an agent pod (or ephemeral container) next to the target, reached
    through the API server's port-forward; removed with `stack`, also on Ctrl-C."""
    from mirrord_trace.agent_client import RemoteError
    from mirrord_trace.kube import KubeAgent, KubeError, Progress

    try:
        client = stack.enter_context(KubeAgent(target, cfg, Progress(PROG)))
        remote_env = dict(client.request("env")["env"]) if cfg.feature.env.enabled else {}
    except KubeError as error:
        raise UserError(error.message, error.hint, EXIT_FAILURE) from None
    except RemoteError as error:
        raise UserError(
            f"the agent failed during start-up: {error}", "try again", EXIT_FAILURE
        ) from None
    except KeyboardInterrupt:
        raise UserError(
            "interrupted during start-up",
            "the agent was removed; the program was not started",
            EXIT_INTERRUPTED,
        ) from None
    return client, remote_env


def _open_trace(path: str | None, stack: ExitStack) -> TraceSink | None:
    """`--trace FILE|-`: where the supervisor's trace lines go (closed with `stack`)."""
    if path is None:
        return None
    from mirrord_trace.trace_sink import TraceSink

    if path == "-":
        stream: TextIO = sys.stderr
    else:
        try:
            stream = stack.enter_context(open(path, "w", encoding="utf-8"))  # noqa: SIM115
        except OSError as error:
            raise UserError(
                f"cannot write the trace to {path}: {error.strerror}",
                "give a writable file, or '-' for stderr",
            ) from None
    sink = TraceSink(stream)
    stack.callback(sink.close)  # before the file closes: what is pending is written first
    return sink
