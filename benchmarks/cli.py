"""`python -m benchmarks [SCENARIO...] [--json FILE] [--repeat N] [--quick]`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from benchmarks.placement import PLACEMENTS
from benchmarks.registry import SCENARIOS, load_scenario_modules
from benchmarks.report import format_table, write_json
from benchmarks.runner import Settings, run_scenarios
from benchmarks.variants import ROOT

PROG = "benchmarks"
DEFAULT_REPEAT = 5
QUICK_REPEAT = 3


class UserError(click.ClickException):
    pass


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("scenario_names", metavar="[SCENARIO]...", nargs=-1)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the rows as a JSON list to FILE.",
)
@click.option(
    "--repeat",
    type=click.IntRange(min=1),
    help=f"Rounds per scenario (default {DEFAULT_REPEAT}, {QUICK_REPEAT} with --quick).",
)
@click.option("--quick", is_flag=True, help="Small sizes: a smoke test, not a measurement.")
@click.option(
    "--placement",
    "placements",
    multiple=True,
    type=click.Choice(list(PLACEMENTS)),
    help="Run only these placements (repeatable; default: all).",
)
@click.option(
    "--trace-arg",
    "trace_args",
    multiple=True,
    metavar="ARG",
    help="Extra argument for `mirrord-trace exec` (repeatable).",
)
@click.option(
    "--bin-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=ROOT / "build" / "bin",
    show_default=True,
    help="Where `make examples` put the example programs.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=600,
    show_default=True,
    help="Seconds one measured command may take.",
)
@click.option("--list", "list_only", is_flag=True, help="List the scenarios and exit.")
def benchmarks_command(
    scenario_names: tuple[str, ...],
    json_path: Path | None,
    repeat: int | None,
    quick: bool,
    placements: tuple[str, ...],
    trace_args: tuple[str, ...],
    bin_dir: Path,
    timeout: float,
    list_only: bool,
) -> None:
    """Measure mirrord-trace beside native runs, a bare seccomp filter and strace; each
    scenario's variants run interleaved and repeated, and the report quotes medians."""
    for problem in load_scenario_modules():
        click.echo(f"{PROG}: warning: scenarios not loaded from {problem}", err=True)
    if list_only:
        for name, registered in SCENARIOS.items():
            click.echo(f"{name}: {registered.description}")
        return
    unknown = [name for name in scenario_names if name not in SCENARIOS]
    if unknown:
        raise UserError(
            f"unknown scenario {', '.join(unknown)} (available: {', '.join(SCENARIOS)})"
        )
    chosen = [SCENARIOS[name] for name in scenario_names or SCENARIOS]
    settings = Settings(
        repeat=repeat or (QUICK_REPEAT if quick else DEFAULT_REPEAT),
        quick=quick,
        bin_dir=bin_dir.resolve(),
        placements=placements or tuple(PLACEMENTS),
        timeout=timeout,
        mirrord_trace_args=trace_args,
    )
    rows = run_scenarios(chosen, settings)
    click.echo(format_table(rows))
    if json_path is not None:
        write_json(rows, json_path)
    failed = sum(1 for row in rows if row.error)
    if failed:
        click.echo(f"{PROG}: {failed} of {len(rows)} rows failed (see the note column)", err=True)
        sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    """Entry point: every usage error is one line on stderr and exit status 2."""
    try:
        benchmarks_command.main(args=argv, prog_name=f"python -m {PROG}", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo(f"{PROG}: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as error:
        message = " ".join(error.format_message().split())
        click.echo(f"{PROG}: error: {message}", err=True)
        sys.exit(2)
