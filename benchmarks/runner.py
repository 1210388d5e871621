"""Runs the chosen scenarios in each of their placements and completes the rows with ratios to
the scenario's baseline and the verdict on goals."""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.placement import PLACEMENTS
from benchmarks.registry import Context, Scenario, ScenarioError
from benchmarks.rows import Row


@dataclass(frozen=True)
class Settings:
    repeat: int
    quick: bool
    bin_dir: Path
    placements: tuple[str, ...]
    timeout: float
    mirrord_trace_args: tuple[str, ...] = ()


def run_scenarios(scenarios: Sequence[Scenario], settings: Settings) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="mirrord-trace-bench-") as work_dir:
        for chosen in scenarios:
            for placement_name in chosen.placements:
                if placement_name not in settings.placements:
                    continue
                print(f"running {chosen.name} [{placement_name}]", file=sys.stderr, flush=True)
                ctx = Context(
                    scenario=chosen.name,
                    placement=PLACEMENTS[placement_name],
                    repeat=settings.repeat,
                    quick=settings.quick,
                    bin_dir=settings.bin_dir,
                    work_dir=Path(work_dir),
                    timeout=settings.timeout,
                    mirrord_trace_args=settings.mirrord_trace_args,
                )
                rows.extend(complete(chosen, run_one(chosen, ctx)))
    return rows


def run_one(chosen: Scenario, ctx: Context) -> list[Row]:
    """The scenario's rows; a scenario that cannot run yields one failed row instead of a crash."""
    try:
        return list(chosen.run(ctx))
    except ScenarioError as error:
        reason = str(error)
    except Exception as error:  # a broken scenario must not hide the others' results
        reason = f"{type(error).__name__}: {error}"
    return [ctx.failed_row("*", "-", "-", reason)]


def complete(chosen: Scenario, rows: Iterable[Row]) -> list[Row]:
    """Adds each row's ratio to the baseline row (same metric and placement) and goal verdict."""
    rows = list(rows)
    baselines = {
        (row.metric, row.placement): row.median
        for row in rows
        if row.variant == chosen.baseline and row.median is not None
    }
    completed = []
    for row in rows:
        ratio = row.ratio
        base = baselines.get((row.metric, row.placement))
        if ratio is None and row.median is not None and base:
            ratio = row.median / base
        goal = chosen.goals.get(row.variant)
        goal_text = goal_met = None
        if goal is not None:
            goal_text = goal.describe(chosen.baseline or "baseline", row.unit)
            if row.median is not None:
                goal_met = goal.is_met(row.median, ratio)
        completed.append(dataclasses.replace(row, ratio=ratio, goal=goal_text, goal_met=goal_met))
    return completed
