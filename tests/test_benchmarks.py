"""The benchmark harness runs, reports medians in the promised shape, and survives failures.

Speed is not judged here (that is what `make bench` is for): these tests check that the numbers
exist, are consistent with their samples, and that a broken variant or scenario is reported
instead of crashing the run.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.measure import CommandFailed, wall_seconds
from benchmarks.registry import SCENARIOS, Context, scenario
from benchmarks.rows import Goal
from benchmarks.runner import Settings, run_scenarios
from tests.conftest import BIN_DIR, ROOT

REQUIRED_KEYS = {"scenario", "variant", "metric", "median", "unit", "ratio", "placement", "samples"}


def run_harness(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_quick_run_reports_medians_for_every_variant_and_placement(bins, tmp_path: Path) -> None:
    bins("probe-static")  # fails with a clear message when `make examples` was not run
    report = tmp_path / "results.json"
    result = run_harness("untrapped", "startup", "--quick", "--repeat", "2", "--json", str(report))
    rows = json.loads(report.read_text())
    failed = [row for row in rows if row["error"]]
    assert result.returncode == (1 if failed else 0), result.stderr

    assert isinstance(rows, list)
    for row in rows:
        assert row.keys() >= REQUIRED_KEYS
    expected_variants = {
        "untrapped": {"native", "floor", "mirrord-trace", "mirrord-trace notify"},
        "startup": {
            "native",
            "mirrord-trace",
            "mirrord-trace notify",
            "mirrord-trace (local target)",
        },
    }
    found = {(row["scenario"], row["placement"], row["variant"]) for row in rows}
    assert found == {
        (name, placement, variant)
        for name, variants in expected_variants.items()
        for placement in ("same-cpu", "free")
        for variant in variants
    }

    for row in rows:
        if row["variant"] in ("native", "floor"):
            # These depend on nothing under development: they must always measure.
            assert row["error"] is None, row
        if row["error"]:
            assert row["median"] is None and row["error"].strip()
            continue
        assert isinstance(row["median"], float) and row["median"] > 0, row
        assert len(row["samples"]) == 2
        assert row["median"] == pytest.approx(statistics.median(row["samples"]))
        baseline_variant = "floor" if row["scenario"] == "untrapped" else "native"
        baseline = next(
            other
            for other in rows
            if (other["scenario"], other["placement"], other["variant"])
            == (row["scenario"], row["placement"], baseline_variant)
        )
        assert row["ratio"] == pytest.approx(row["median"] / baseline["median"])
        assert row["unit"] == ("us/call" if row["scenario"] == "untrapped" else "ms")

    table = result.stdout
    for name in expected_variants:
        assert name in table
    assert "median" in table.splitlines()[0]


def test_unknown_scenario_is_one_error_line() -> None:
    result = run_harness("no-such-scenario")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "no-such-scenario" in result.stderr
    assert "untrapped" in result.stderr  # it says what is available


def test_floor_launcher_runs_the_program_under_a_seccomp_filter(bins) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "floor.py"),
            "--",
            str(bins("probe-static")),
            "cat",
            "/proc/self/status",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    status = dict(line.split(":\t", 1) for line in result.stdout.splitlines() if ":\t" in line)
    assert status["Seccomp"].strip() == "2"  # SECCOMP_MODE_FILTER
    assert status["Seccomp_filters"].strip() == "1"


def test_timed_out_command_leaves_no_process_behind(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    script = f"echo $$ > {pid_file}; sleep 60 & sleep 60 & wait"
    with pytest.raises(CommandFailed, match="timed out"):
        wall_seconds(["sh", "-c", script], timeout=1)
    group = int(pid_file.read_text())
    # Killed processes linger as zombies until init reaps them: allow it a moment.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    pytest.fail(f"processes of group {group} survived the timeout")


def test_failing_command_reports_its_last_stderr_line(bins) -> None:
    with pytest.raises(CommandFailed, match=r"exit status 2: probe: cat /nonexistent: No such"):
        wall_seconds([str(bins("probe-static")), "cat", "/nonexistent"], timeout=60)


@pytest.fixture
def temporary_scenarios() -> Iterator[list[str]]:
    """Names registered by a test are removed afterwards, so the registry stays as shipped."""
    names: list[str] = []
    yield names
    for name in names:
        SCENARIOS.pop(name, None)


def test_scenarios_may_return_their_own_rows_and_failures_become_rows(
    temporary_scenarios: list[str], tmp_path: Path
) -> None:
    @scenario(
        "test-own-rows",
        baseline="plain",
        goals={"fancy": Goal(max_ratio=2.5)},
        placements=("free",),
    )
    def own_rows(ctx: Context):
        return [
            ctx.row("plain", "latency", "ms", [2.0, 4.0, 3.0]),
            ctx.row("fancy", "latency", "ms", [9.0, 6.0, 7.0]),
            ctx.failed_row("broken", "latency", "ms", "agent not reachable"),
        ]

    @scenario("test-crashing", placements=("same-cpu",))
    def crashing(ctx: Context):
        raise RuntimeError("scenario bug")

    temporary_scenarios += ["test-own-rows", "test-crashing"]
    settings = Settings(
        repeat=1, quick=True, bin_dir=BIN_DIR, placements=("same-cpu", "free"), timeout=60
    )
    rows = run_scenarios([SCENARIOS["test-own-rows"], SCENARIOS["test-crashing"]], settings)

    by_variant = {(row.scenario, row.variant): row for row in rows}
    plain, fancy = by_variant["test-own-rows", "plain"], by_variant["test-own-rows", "fancy"]
    assert (plain.median, plain.ratio, plain.placement) == (3.0, 1.0, "free")
    assert fancy.ratio == pytest.approx(7.0 / 3.0)
    assert (fancy.goal, fancy.goal_met) == ("<= 2.5 x plain", True)
    broken = by_variant["test-own-rows", "broken"]
    assert (broken.median, broken.error) == (None, "agent not reachable")
    crashed = by_variant["test-crashing", "*"]
    assert crashed.median is None
    assert crashed.error == "RuntimeError: scenario bug"
    assert crashed.placement == "same-cpu"
