"""The core scenarios: what interception costs a syscall it does not trap, one it traps, a Go
program's stat storm, and start-up. Sizes shrink with --quick (a smoke test, not a measurement)."""

from __future__ import annotations

import os

from benchmarks.measure import per_call_rows, wall_rows
from benchmarks.registry import Context, scenario
from benchmarks.rows import Goal, Row
from benchmarks.variants import NATIVE, Variant, floor, strace


def _local_file(ctx: Context) -> str:
    path = ctx.work_dir / "local-file"
    path.write_text("a local file the benchmark opens and stats\n")
    return str(path)


@scenario("untrapped", baseline="floor", goals={"mirrord-trace": Goal(max_ratio=1.05)})
def untrapped(ctx: Context) -> list[Row]:
    """probe-static getppid N: a syscall the filter never traps, against a bare filter."""
    probe = str(ctx.binary("probe-static"))
    iterations = 500_000 if ctx.quick else 2_000_000
    return per_call_rows(
        ctx,
        [NATIVE, floor(), ctx.mirrord_trace, ctx.mirrord_trace_notify],
        lambda count: [probe, "getppid", str(count)],
        iterations,
    )


@scenario("trapped-openat", baseline="strace", goals={"mirrord-trace": Goal(max_ratio=0.6)})
def trapped_openat(ctx: Context) -> list[Row]:
    """probe-static openloop N FILE: a trapped openat that stays local, against strace."""
    probe, target = str(ctx.binary("probe-static")), _local_file(ctx)
    iterations = 2_000 if ctx.quick else 50_000
    return per_call_rows(
        ctx,
        [NATIVE, ctx.mirrord_trace, ctx.mirrord_trace_notify, strace()],
        lambda count: [probe, "openloop", str(count), target],
        iterations,
    )


@scenario("go-stat", baseline="strace", goals={"mirrord-trace": Goal(max_ratio=0.6)})
def go_stat(ctx: Context) -> list[Row]:
    """probe-go statloop N 4 FILE: trapped newfstatat from 4 goroutines, against strace."""
    probe, target = str(ctx.binary("probe-go")), _local_file(ctx)
    iterations = 1_000 if ctx.quick else 20_000
    return per_call_rows(
        ctx,
        [NATIVE, ctx.mirrord_trace, ctx.mirrord_trace_notify, strace()],
        lambda count: [probe, "statloop", str(count), "4", target],
        iterations,
    )


@scenario(
    "startup",
    baseline="native",
    goals={
        "mirrord-trace": Goal(max_median=80),
        "mirrord-trace (local target)": Goal(max_median=150),
    },
)
def startup(ctx: Context) -> list[Row]:
    """/bin/true: wall time from spawn to exit, targetless and with a local target (the agent
    started, the handshake and the target's environment), i.e. what mirrord-trace adds to
    every run."""
    # The benchmark's own process is the target (as in the agent scenarios): that needs root,
    # and without it the row says so.
    local_target = Variant(
        "mirrord-trace (local target)",
        (*ctx.mirrord_trace.prefix[:-1], "--target", f"pid/{os.getpid()}", "--"),
    )
    return wall_rows(
        ctx, [NATIVE, ctx.mirrord_trace, ctx.mirrord_trace_notify, local_target], ["/bin/true"]
    )
