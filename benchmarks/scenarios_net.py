"""Outgoing traffic through the target, against a sandbox pod this module brings up itself.

outgoing-throughput   a static Go program downloads N MiB from the pod's cluster-only service:
                      direct      from inside the pod's network namespace (no relay at all)
                      asyncio-relay  from this machine through a one-hop Python asyncio relay
                                  running in the pod (the cost of one Python hop)
                      mirrord-trace  from this machine, connected through the target
                      The program times the transfer itself, so start-up is left out.
                      Goal: mirrord-trace at least 0.7 x the one-hop relay.
outgoing-connect      what one connect costs: agent round trips per connect (counted by the
                      agent), and microseconds per connect beside a direct one in the pod.
                      Goal: one round trip.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from benchmarks.measure import CommandFailed
from benchmarks.registry import Context, ScenarioError, scenario
from benchmarks.rows import Goal, Row
from benchmarks.variants import mirrord_trace_executable

SANDBOX_NAME = "mtbench-net"
NSENTER = "/usr/bin/nsenter"

# The baseline hop: what a plain Python asyncio relay costs (64 KiB reads, drain per write).
ASYNCIO_RELAY = r"""
import asyncio, sys

async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()

async def main(listen_host, target_host, target_port):
    async def handle(reader, writer):
        upstream_reader, upstream_writer = await asyncio.open_connection(target_host, target_port)
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
        writer.close()
        upstream_writer.close()
    server = await asyncio.start_server(handle, listen_host, 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""

# What connects are measured against: accepts and closes, with a backlog deep enough that no
# SYN is ever dropped (the pod's HTTP service queues only 5).
ACCEPTING_SINK = r"""
import socket, sys
server = socket.create_server((sys.argv[1], 0), backlog=4096)
print(server.getsockname()[1], flush=True)
while True:
    connection, _ = server.accept()
    connection.close()
"""


@contextlib.contextmanager
def _sandbox() -> Iterator[object]:
    if os.geteuid() != 0:
        raise ScenarioError("the network scenarios build a sandbox pod, which needs root")
    from mirrord_trace.sandbox import SandboxError, down, up

    try:
        info = up(SANDBOX_NAME)
    except SandboxError as error:
        raise ScenarioError(f"the sandbox pod could not be built: {error}") from None
    try:
        yield info
    finally:
        down(SANDBOX_NAME)


def _run(command: list[str], timeout: float) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise CommandFailed(f"timed out after {timeout:g} s: {' '.join(command)}") from None
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise CommandFailed(f"exit status {done.returncode}: {lines[-1] if lines else '?'}")
    return done.stdout


def _probe_result(output: str) -> tuple[int, float]:
    """(bytes or count, seconds) from `bytes=N seconds=S` / `total=N seconds=S`."""
    found = re.search(r"(?:bytes|total)=(\d+) seconds=([0-9.]+)", output)
    if found is None:
        raise CommandFailed(f"unexpected probe output: {output.strip()[:200]}")
    return int(found.group(1)), float(found.group(2))


@contextlib.contextmanager
def _pod_server(ctx: Context, info, script: str, *args: str) -> Iterator[int]:
    """A Python server in the pod listening on the pod's address (reachable from here too);
    yields the port it printed."""
    command = ctx.placement.wrap([NSENTER, f"--net={info.netns_path}", "--", sys.executable,
                                  "-c", script, info.target_addr, *args])
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True,
                              stdin=subprocess.DEVNULL)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        if not line.strip().isdigit():
            raise ScenarioError("a helper server in the pod did not start")
        yield int(line)
    finally:
        server.kill()
        server.wait()


def _traced(
    ctx: Context, info, program: list[str], engine: tuple[str, ...] = ()
) -> list[str]:
    return ctx.placement.wrap([str(mirrord_trace_executable()), "exec", *ctx.mirrord_trace_args,
                               *engine, "--target", f"pid/{info.target_pid}", "--", *program])


def _in_pod(ctx: Context, info, program: list[str]) -> list[str]:
    return ctx.placement.wrap([NSENTER, f"--net={info.netns_path}", "--", *program])


@scenario(
    "outgoing-throughput",
    baseline="asyncio-relay",
    goals={"mirrord-trace": Goal(min_ratio=0.7)},
)
def outgoing_throughput(ctx: Context) -> list[Row]:
    """A Go download from the pod's service: direct in the pod, via one asyncio hop, traced."""
    probe = str(ctx.binary("probe-go"))
    size = (16 if ctx.quick else 256) * 1024 * 1024
    samples: dict[str, list[float]] = {"direct": [], "asyncio-relay": [], "mirrord-trace": []}
    errors: dict[str, str] = {}
    with _sandbox() as info, _pod_server(ctx, info, ASYNCIO_RELAY, info.service_addr,
                                         "80") as relay_port:
        path = f"/bytes/{size}"
        commands = {
            "direct": _in_pod(ctx, info, [probe, "fetch", f"http://{info.service_addr}{path}"]),
            "asyncio-relay": ctx.placement.wrap(
                [probe, "fetch", f"http://{info.target_addr}:{relay_port}{path}"]
            ),
            "mirrord-trace": _traced(ctx, info,
                                     [probe, "fetch", f"http://{info.service_addr}{path}"]),
        }
        for _ in range(ctx.repeat):
            for variant, command in commands.items():
                if variant in errors:
                    continue
                try:
                    received, seconds = _probe_result(_run(command, ctx.timeout))
                except CommandFailed as error:
                    errors[variant] = str(error)
                    continue
                samples[variant].append(received / seconds / 1e6)
    return [
        ctx.failed_row(variant, "throughput", "MB/s", errors[variant]) if variant in errors
        else ctx.row(variant, "throughput", "MB/s", values)
        for variant, values in samples.items()
    ]


# Counting requests needs the agent client in hand: a child process runs the supervisor
# in-process with its own local agent and reports the agent's request counts.
COUNT_ROUND_TRIPS = r"""
import json, os, sys
from mirrord_trace.config import Config
from mirrord_trace.local_target import LocalAgent
from mirrord_trace.supervisor import run

target, program = int(sys.argv[1]), sys.argv[2:]
with LocalAgent(target) as client:
    before = client.request("stats")["session"]
    with open(os.devnull, "w") as quiet:
        os.dup2(quiet.fileno(), 1)
        status = run(program, env=dict(os.environ), config=Config(), agent=client)
    after = client.request("stats")["session"]
counts = {k: after.get(k, 0) - before.get(k, 0) for k in after if k != "stats"}
print(json.dumps({"status": status, "requests": counts}), file=sys.stderr)
"""


def _requests_of_a_run(ctx: Context, info, program: list[str]) -> dict[str, int]:
    import json

    command = ctx.placement.wrap([sys.executable, "-c", COUNT_ROUND_TRIPS,
                                  str(info.target_pid), *program])
    done = subprocess.run(command, capture_output=True, text=True, timeout=ctx.timeout,
                          cwd=Path(__file__).resolve().parent.parent)
    try:
        result = json.loads(done.stderr.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise CommandFailed(f"the counting run failed: {done.stderr.strip()[-200:]}") from None
    if result["status"] != 0:
        raise CommandFailed(f"the program failed under the counting run: {result}")
    return result["requests"]


@scenario("outgoing-connect", baseline="direct", goals={"round-trips": Goal(max_median=1.5)})
def outgoing_connect(ctx: Context) -> list[Row]:
    """Agent round trips per connect (goal: one), and the cost of a connect in microseconds."""
    probe = str(ctx.binary("probe-go"))
    count = 50 if ctx.quick else 500
    rows: list[Row] = []
    with _sandbox() as info, _pod_server(ctx, info, ACCEPTING_SINK) as sink_port:
        address = f"{info.target_addr}:{sink_port}"
        trips: list[float] = []
        latency: dict[str, list[float]] = {
            "direct": [], "mirrord-trace": [], "mirrord-trace notify": [],
        }  # fmt: skip
        errors: dict[str, str] = {}
        for _ in range(ctx.repeat):
            try:
                many = _requests_of_a_run(ctx, info, [probe, "dial-loop", str(count), address])
                one = _requests_of_a_run(ctx, info, [probe, "dial-loop", "1", address])
                # The difference leaves out what the program's start-up asked (its files).
                trips.append((sum(many.values()) - sum(one.values())) / (count - 1))
            except CommandFailed as error:
                errors["round-trips"] = str(error)
            for variant, command in (
                ("direct", _in_pod(ctx, info, [probe, "dial-loop", str(count), address])),
                ("mirrord-trace", _traced(ctx, info, [probe, "dial-loop", str(count), address])),
                ("mirrord-trace notify", _traced(ctx, info, [probe, "dial-loop", str(count),
                                                             address], ("--engine", "notify"))),
            ):
                if variant in errors:
                    continue
                try:
                    done, seconds = _probe_result(_run(command, ctx.timeout))
                except CommandFailed as error:
                    errors[variant] = str(error)
                    continue
                latency[variant].append(seconds / done * 1e6)
        if "round-trips" in errors:
            rows.append(ctx.failed_row("round-trips", "per-connect", "round trips",
                                       errors["round-trips"]))
        else:
            rows.append(ctx.row("round-trips", "per-connect", "round trips", trips))
        for variant, values in latency.items():
            if variant in errors:
                rows.append(ctx.failed_row(variant, "connect", "us/connect", errors[variant]))
            else:
                rows.append(ctx.row(variant, "connect", "us/connect", values))
    return rows
