"""Agent scenarios: what one request to the agent costs, and how many it serves per second.

The measured path is the real one: AgentClient (blocking call from this thread, I/O thread
reading replies) -> TCP -> `python -m agent` entered into a target's namespaces -> reply.
The target is this benchmark process itself; that needs root, like every local target.

The plain functions (scenario_agent_rtt, scenario_agent_throughput) return row dicts and can be
called alone; the @scenario wrappers feed them to the `python -m benchmarks` harness, pinning
the process (and so the agent it starts) to one CPU for the same-cpu placement.
"""

from __future__ import annotations

import os
import statistics
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from benchmarks.registry import Context, ScenarioError, scenario
from benchmarks.rows import Row
from mirrord_trace.agent_client import AgentClient
from mirrord_trace.local_target import LocalAgent, TargetError

RTT_REQUESTS = 2_000
THROUGHPUT_REQUESTS = 20_000
IN_FLIGHT = 64


def _round_trips_us(client: AgentClient, kind: str, count: int, **fields: Any) -> float:
    """Median latency of `count` sequential requests, in microseconds."""
    latencies = []
    for _ in range(count):
        start = time.perf_counter_ns()
        client.request(kind, **fields)
        latencies.append((time.perf_counter_ns() - start) / 1000)
    return statistics.median(latencies)


def _requests_per_second(client: AgentClient, count: int, in_flight: int) -> float:
    """Noop requests per second with `in_flight` requests outstanding at all times."""
    window: deque = deque(client.request_async("noop") for _ in range(in_flight))
    start = time.perf_counter()
    for _ in range(count - in_flight):
        window.popleft().result()
        window.append(client.request_async("noop"))
    while window:
        window.popleft().result()
    return count / (time.perf_counter() - start)


def _row(scenario_name: str, variant: str, metric: str, unit: str, samples: list[float]):
    return {
        "scenario": scenario_name,
        "variant": variant,
        "metric": metric,
        "median": statistics.median(samples),
        "unit": unit,
        "samples": samples,
    }


def scenario_agent_rtt(repeats: int, requests: int = RTT_REQUESTS) -> list[dict[str, Any]]:
    """Round-trip latency (median of `requests` calls per repeat) of noop and fs.stat."""
    noop, stat = [], []
    with LocalAgent(os.getpid()) as client:
        client.request("noop")  # warm up the connection and the agent
        for _ in range(repeats):
            noop.append(_round_trips_us(client, "noop", requests))
            stat.append(_round_trips_us(client, "fs.stat", requests, path="/"))
    return [
        _row("agent-rtt", "noop", "round-trip", "us", noop),
        _row("agent-rtt", "fs.stat", "round-trip", "us", stat),
    ]


def scenario_agent_throughput(
    repeats: int, requests: int = THROUGHPUT_REQUESTS, in_flight: int = IN_FLIGHT
) -> list[dict[str, Any]]:
    """Noop requests per second with `in_flight` outstanding."""
    rates = []
    with LocalAgent(os.getpid()) as client:
        _requests_per_second(client, in_flight * 2, in_flight)  # warm-up
        for _ in range(repeats):
            rates.append(_requests_per_second(client, requests, in_flight))
    return [_row("agent-throughput", f"noop-{in_flight}-in-flight", "rate", "req/s", rates)]


@contextmanager
def _placed(ctx: Context) -> Iterator[None]:
    """Pin to CPU 0 for same-cpu (the agent, started inside, inherits it); restore after."""
    before = os.sched_getaffinity(0)
    if ctx.placement.name == "same-cpu":
        os.sched_setaffinity(0, {min(before)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _as_rows(ctx: Context, rows: list[dict[str, Any]]) -> list[Row]:
    return [ctx.row(r["variant"], r["metric"], r["unit"], r["samples"]) for r in rows]


def _run(ctx: Context, function, **sizes: int) -> list[Row]:
    if os.geteuid() != 0:
        raise ScenarioError("the agent scenarios start a local agent, which needs root")
    try:
        with _placed(ctx):
            return _as_rows(ctx, function(ctx.repeat, **sizes))
    except TargetError as error:
        raise ScenarioError(str(error)) from None


@scenario("agent-rtt", baseline=None)
def agent_rtt(ctx: Context) -> list[Row]:
    """Agent round trip of a noop and an fs.stat request (client thread -> agent -> reply)."""
    return _run(ctx, scenario_agent_rtt, requests=200 if ctx.quick else RTT_REQUESTS)


@scenario("agent-throughput", baseline=None)
def agent_throughput(ctx: Context) -> list[Row]:
    """Agent noop requests per second with 64 in flight on one connection."""
    return _run(
        ctx, scenario_agent_throughput, requests=2_000 if ctx.quick else THROUGHPUT_REQUESTS
    )
