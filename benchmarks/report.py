"""The report: an aligned table for people and a JSON list of row objects for programs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from benchmarks.rows import Row

COLUMNS = ("scenario", "placement", "variant", "metric", "median", "unit", "ratio", "goal", "note")


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _goal(row: Row) -> str:
    if row.goal is None:
        return ""
    verdict = {True: "met", False: "MISSED", None: "unknown"}[row.goal_met]
    return f"{row.goal}: {verdict}"


def format_table(rows: Sequence[Row]) -> str:
    lines = [list(COLUMNS)]
    for row in rows:
        median = "FAILED" if row.error else _number(row.median)
        lines.append(
            [
                row.scenario,
                row.placement,
                row.variant,
                row.metric,
                median,
                row.unit,
                _number(row.ratio),
                _goal(row),
                row.error or "",
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def write_json(rows: Sequence[Row], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([row.to_json() for row in rows], indent=2) + "\n")
