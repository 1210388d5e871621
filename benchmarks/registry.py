"""Scenario registration. A scenario is a function Context -> rows; it may measure with the
helpers in benchmarks.measure or return rows it built itself (ctx.row / ctx.failed_row).

    @scenario("name", baseline="native", goals={"mirrord-trace": Goal(max_ratio=2)})
    def name(ctx: Context) -> list[Row]: ...

Modules named benchmarks/scenarios_*.py are imported automatically.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import benchmarks
from benchmarks.placement import PLACEMENTS, Placement
from benchmarks.rows import Goal, Row
from benchmarks.variants import Variant, mirrord_trace, mirrord_trace_notify


class ScenarioError(Exception):
    """A scenario cannot run at all (e.g. a missing example binary); one line, no traceback."""


@dataclass(frozen=True)
class Context:
    """What a scenario needs to know to run once, in one placement."""

    scenario: str
    placement: Placement
    repeat: int
    quick: bool
    bin_dir: Path
    work_dir: Path
    timeout: float
    mirrord_trace_args: tuple[str, ...] = ()

    def binary(self, name: str) -> Path:
        path = self.bin_dir / name
        if not path.exists():
            raise ScenarioError(f"{path} is missing (build it with `make examples`)")
        return path

    @property
    def mirrord_trace(self) -> Variant:
        return mirrord_trace(self.mirrord_trace_args)

    @property
    def mirrord_trace_notify(self) -> Variant:
        return mirrord_trace_notify(self.mirrord_trace_args)

    def row(self, variant: str, metric: str, unit: str, samples: list[float]) -> Row:
        if not samples:
            return self.failed_row(variant, metric, unit, "no samples")
        return Row.measured(
            samples,
            scenario=self.scenario,
            variant=variant,
            metric=metric,
            unit=unit,
            placement=self.placement.name,
        )

    def failed_row(self, variant: str, metric: str, unit: str, error: str) -> Row:
        return Row.failed(
            error,
            scenario=self.scenario,
            variant=variant,
            metric=metric,
            unit=unit,
            placement=self.placement.name,
        )


ScenarioFunction = Callable[[Context], Iterable[Row]]


@dataclass(frozen=True)
class Scenario:
    name: str
    run: ScenarioFunction
    description: str
    baseline: str | None
    goals: Mapping[str, Goal] = field(default_factory=dict)
    placements: tuple[str, ...] = tuple(PLACEMENTS)


SCENARIOS: dict[str, Scenario] = {}


def scenario(
    name: str,
    *,
    baseline: str | None = "native",
    goals: Mapping[str, Goal] | None = None,
    placements: tuple[str, ...] = tuple(PLACEMENTS),
    description: str | None = None,
) -> Callable[[ScenarioFunction], ScenarioFunction]:
    """Register a scenario. Rows get their ratio to the `baseline` variant's row of the same
    metric and placement; `goals` (by variant) are checked and shown in the report."""
    unknown = set(placements) - set(PLACEMENTS)
    if unknown:
        raise ValueError(f"unknown placements {sorted(unknown)}; known: {list(PLACEMENTS)}")

    def register(function: ScenarioFunction) -> ScenarioFunction:
        if name in SCENARIOS:
            raise ValueError(f"scenario {name!r} is registered twice")
        summary = description or (function.__doc__ or "").strip().split("\n")[0]
        SCENARIOS[name] = Scenario(name, function, summary, baseline, dict(goals or {}), placements)
        return function

    return register


def load_scenario_modules() -> list[str]:
    """Import every benchmarks.scenarios_* module; returns one line per module that failed, so
    one broken module does not take the others down."""
    problems = []
    names = sorted(module.name for module in pkgutil.iter_modules(benchmarks.__path__))
    # The core scenarios come first in listings and default runs; the rest in name order.
    for name in sorted(names, key=lambda name: name != "scenarios_core"):
        if name.startswith("scenarios_"):
            try:
                importlib.import_module(f"benchmarks.{name}")
            except Exception as error:
                problems.append(f"benchmarks.{name}: {type(error).__name__}: {error}")
    return problems
