"""Timing commands and turning timings into rows, variants interleaved round by round
(A, B, C, A, B, C, ...) so slow drift of the machine affects every variant alike."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence

from benchmarks.registry import Context
from benchmarks.rows import Row
from benchmarks.variants import Variant

ProgramFactory = Callable[[int], list[str]]


class CommandFailed(Exception):
    """A measured command did not run to a successful end; the message says why, in one line."""


def wall_seconds(command: list[str], timeout: float) -> float:
    """Wall time of `command` from spawn to exit; CommandFailed unless it exits 0.

    The command gets its own process group so that on timeout nothing it started survives
    (strace's tracees would otherwise carry on detached)."""
    start = time.perf_counter()
    try:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as error:
        raise CommandFailed(f"{command[0]}: {error.strerror or error}") from error
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as error:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise CommandFailed(f"timed out after {timeout:g} s: {' '.join(command)}") from error
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    elapsed = time.perf_counter() - start
    if process.returncode != 0:
        lines = stderr.decode(errors="replace").strip().splitlines()
        reason = lines[-1] if lines else "no message on stderr"
        raise CommandFailed(f"exit status {process.returncode}: {reason}")
    return elapsed


def per_call_rows(
    ctx: Context,
    variants: Sequence[Variant],
    program: ProgramFactory,
    iterations: int,
) -> list[Row]:
    """Per-call cost in microseconds: (wall(N) - wall(0)) / N for each variant, so that start-up
    (interpreter, tracer, exec) cancels out. One sample per round; the row quotes the median."""
    samples: dict[str, list[float]] = {variant.name: [] for variant in variants}
    errors: dict[str, str] = {}

    def run(variant: Variant, count: int) -> float:
        return wall_seconds(ctx.placement.wrap(variant.wrap(program(count))), ctx.timeout)

    for variant in variants:  # warm-up: page cache, and an early verdict on broken variants
        try:
            run(variant, 0)
        except CommandFailed as error:
            errors[variant.name] = str(error)
    for round_index in range(ctx.repeat):
        for variant in variants:
            if variant.name in errors:
                continue
            try:
                # Alternate which run goes first, so neither always sees the warmer machine.
                if round_index % 2 == 0:
                    full, empty = run(variant, iterations), run(variant, 0)
                else:
                    empty, full = run(variant, 0), run(variant, iterations)
            except CommandFailed as error:
                errors[variant.name] = str(error)
                continue
            samples[variant.name].append((full - empty) / iterations * 1e6)
    return [
        _row(ctx, variant.name, "per-call", "us/call", samples[variant.name], errors)
        for variant in variants
    ]


def wall_rows(
    ctx: Context, variants: Sequence[Variant], command: list[str], metric: str = "wall"
) -> list[Row]:
    """Wall time of the whole command in milliseconds, one sample per variant per round."""
    samples: dict[str, list[float]] = {variant.name: [] for variant in variants}
    errors: dict[str, str] = {}
    for _ in range(ctx.repeat):
        for variant in variants:
            if variant.name in errors:
                continue
            try:
                seconds = wall_seconds(ctx.placement.wrap(variant.wrap(command)), ctx.timeout)
            except CommandFailed as error:
                errors[variant.name] = str(error)
                continue
            samples[variant.name].append(seconds * 1e3)
    return [
        _row(ctx, variant.name, metric, "ms", samples[variant.name], errors) for variant in variants
    ]


def _row(
    ctx: Context,
    variant: str,
    metric: str,
    unit: str,
    samples: list[float],
    errors: dict[str, str],
) -> Row:
    if variant in errors:
        return ctx.failed_row(variant, metric, unit, errors[variant])
    return ctx.row(variant, metric, unit, samples)
