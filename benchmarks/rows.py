"""One measured result (a row of the report) and the goal it may be held to."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Goal:
    """A target for one variant: a ratio to the scenario's baseline, or an absolute median.

    `min_ratio` is for metrics where more is better (throughput): at least that ratio.
    """

    max_ratio: float | None = None
    max_median: float | None = None
    min_ratio: float | None = None

    def describe(self, baseline: str, unit: str) -> str:
        parts = []
        if self.max_ratio is not None:
            parts.append(f"<= {self.max_ratio:g} x {baseline}")
        if self.min_ratio is not None:
            parts.append(f">= {self.min_ratio:g} x {baseline}")
        if self.max_median is not None:
            parts.append(f"< {self.max_median:g} {unit}")
        return " and ".join(parts)

    def is_met(self, median: float, ratio: float | None) -> bool | None:
        if (self.max_ratio is not None or self.min_ratio is not None) and ratio is None:
            return None
        ratio_ok = self.max_ratio is None or (ratio is not None and ratio <= self.max_ratio)
        at_least = self.min_ratio is None or (ratio is not None and ratio >= self.min_ratio)
        median_ok = self.max_median is None or median < self.max_median
        return ratio_ok and at_least and median_ok


@dataclass(frozen=True)
class Row:
    """`median` is None exactly when the variant failed; `error` then says why."""

    scenario: str
    variant: str
    metric: str
    unit: str
    placement: str
    samples: list[float] = field(default_factory=list)
    median: float | None = None
    ratio: float | None = None
    error: str | None = None
    goal: str | None = None
    goal_met: bool | None = None

    @classmethod
    def measured(cls, samples: list[float], **fields: Any) -> Row:
        return cls(samples=list(samples), median=statistics.median(samples), **fields)

    @classmethod
    def failed(cls, error: str, **fields: Any) -> Row:
        return cls(error=error, **fields)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
