"""The `mirrord-trace` console script: the plain form of `exec` without click, the rest with it.

`mirrord-trace exec [OPTIONS] -- PROGRAM [ARGS]...` is what users run most, and its start-up is
benchmarked (`exec -- /bin/true`). Importing click and building the command line
(mirrord_trace.cli) is ~20 ms of it, so the plain form is recognised here and handed straight to
mirrord_trace.exec_run. Plain means: `exec`, then options each given once as `OPTION VALUE` or
as a flag, every value valid, then `--` or the first word of the program, and a program.
Anything else - another command, `--help`, `--option=value`, `-tVALUE`, an unknown or repeated
option, a value that click would reject or that looks like an option, no program, click's shell
completion - goes to the click command line, which parses the arguments again from the start.
So this path never answers differently; it only answers sooner. tests/test_launcher.py holds it
to that against click.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from mirrord_trace.config import ConfigError, FsMode
from mirrord_trace.env import EnvPatternError, split_patterns
from mirrord_trace.exec_run import EXIT_INTERRUPTED, PROG, UserError, fail, run_exec
from mirrord_trace.targets import TargetParseError, parse_target

# `exec`'s options, as declared in mirrord_trace.cli: option -> run_exec's keyword argument.
VALUE_OPTIONS = {
    "-t": "target",
    "--target": "target",
    "-n": "target_namespace",
    "--target-namespace": "target_namespace",
    "--context": "kube_context",
    "-f": "config_file",
    "--config-file": "config_file",
    "--trace": "trace_path",
    "--fs-mode": "fs_mode",
    "-s": "env_include",
    "--override-env-vars-include": "env_include",
    "-x": "env_exclude",
    "--override-env-vars-exclude": "env_exclude",
    "--agent-ttl": "agent_ttl",
}
FLAGS = {
    "--no-outgoing": "no_outgoing",
    "--no-tcp-outgoing": "no_tcp_outgoing",
    "--no-udp-outgoing": "no_udp_outgoing",
    "--no-remote-dns": "no_remote_dns",
    "--steal": "steal",
    "--ephemeral-container": "ephemeral_container",
}
AGENT_TTL_MAX = 65535
# click's shell completion is asked for through this variable (click derives it from PROG).
COMPLETION_VARIABLE = "_" + PROG.replace("-", "_").upper() + "_COMPLETE"


def main(args: Sequence[str] | None = None) -> Any:
    """Run the command line `args` (default: sys.argv[1:]); exits with the command's status."""
    plain = None
    if not os.environ.get(COMPLETION_VARIABLE):
        plain = parse_plain_exec(sys.argv[1:] if args is None else args)
    if plain is None:
        from mirrord_trace.cli import main as click_main

        return click_main(args)
    program, options = plain
    # Below, the exceptions are reported as mirrord_trace.cli reports them, after click's main
    # has dealt with them (it converts some): the same lines, the same exit statuses.
    try:
        status = run_exec(program, **options)
    except UserError as error:
        fail(error.format_message(), error.hint, error.exit_code)
    except (EOFError, KeyboardInterrupt):
        import click

        click.echo(file=sys.stderr)  # click's main ends the ^C line before reporting
        fail("interrupted", "nothing more was done", EXIT_INTERRUPTED)
    except OSError as error:
        if error.errno != errno.EPIPE:
            raise
        # click's main: a reader that went away ends the command quietly, with status 1.
        from click.utils import _PacifyFlushWrapper

        sys.stdout = _PacifyFlushWrapper(sys.stdout)  # type: ignore[assignment]
        sys.stderr = _PacifyFlushWrapper(sys.stderr)  # type: ignore[assignment]
        sys.exit(1)
    exit_without_teardown(status)


def exit_without_teardown(status: int) -> NoReturn:
    """sys.exit(status), less the interpreter's final teardown.

    Freeing every module and object of a process that is about to end is ~10-15 ms of each run
    (measured with `exec -- /bin/true`). What exit does that anyone can observe is kept, in its
    order: non-daemon threads are waited for (and threading's own exit hooks run), atexit
    functions run, the standard streams are flushed. Python never promised to call `__del__`
    for objects still alive at exit. Where any of this is not possible, it is a plain sys.exit.
    """
    import atexit
    import threading

    shutdown_threads = getattr(threading, "_shutdown", None)
    run_exit_functions = getattr(atexit, "_run_exitfuncs", None)
    if shutdown_threads is None or run_exit_functions is None:
        sys.exit(status)
    shutdown_threads()
    run_exit_functions()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        sys.exit(status)  # the interpreter flushes again and reports it as it always does
    os._exit(status)


def parse_plain_exec(args: Sequence[str]) -> tuple[tuple[str, ...], dict[str, Any]] | None:
    """(program, run_exec's keyword arguments) when `args` is a plain `exec`, else None."""
    if not args or args[0] != "exec":
        return None
    options: dict[str, Any] = {}
    index = 1
    while index < len(args):
        arg = args[index]
        if arg == "--":
            index += 1
            break
        if not arg.startswith("-"):
            break  # the program's first word: options end there, as in click
        name = FLAGS.get(arg)
        if name is not None:
            if name in options:
                return None
            options[name] = True
            index += 1
            continue
        name = VALUE_OPTIONS.get(arg)
        if name is None or name in options or index + 1 >= len(args):
            return None
        value = _checked_value(name, args[index + 1])
        if value is None:
            return None
        options[name] = value
        index += 2
    program = tuple(args[index:])
    return (program, options) if program else None


def _checked_value(name: str, text: str) -> Any | None:
    """The value click would give `exec` for option `name`, or None where click may disagree
    or would refuse it (click then says why)."""
    if text.startswith("-"):
        return None  # click may take it as the value or as the next option: let it decide
    if name == "target":
        try:
            return parse_target(text)
        except TargetParseError:
            return None
    if name == "target_namespace":
        from mirrord_trace.config.parse import parse_namespace

        try:
            return parse_namespace(text, "--target-namespace")
        except ConfigError:
            return None
    if name == "fs_mode":
        return text if text in {mode.value for mode in FsMode} else None
    if name in ("env_include", "env_exclude"):
        try:
            split_patterns(text)
        except EnvPatternError:
            return None
        return text
    if name == "agent_ttl":
        # click's int() also takes " 5", "+5" and "1_0"; those go to click.
        if not (text.isascii() and text.isdigit()) or int(text) > AGENT_TTL_MAX:
            return None
        return int(text)
    return text
