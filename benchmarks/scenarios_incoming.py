"""Incoming traffic: HTTP requests through steal, beside the same program reached directly.

The program is probe-go's HTTP server (static Go). Variants, all up at once and measured round
by round (interleaved) with wrk from Debian's packages:

  direct        the program run natively on this machine, wrk -> 127.0.0.1
  steal         the program under `mirrord-trace exec --steal --target pid/<sandbox pod>`,
                wrk -> the pod's address: iptables REDIRECT in the pod -> the agent, which
                hands each connection over whole (a local target's agent is on this
                machine) -> the supervisor relays it to the program's real local listener
  steal (stream)  the same through the session's stream, the path a pod's agent takes:
                agent -> frames -> supervisor -> the program
                (MIRRORD_TRACE_INCOMING_HANDOVER=0)
  steal+filter  the same with an HTTP header filter that every request matches (the agent
                reads each request with httptools and routes it; the program's connection is
                handed over, so its bytes go agent -> program with no frame)
  steal+filter (stream)  the same through the session's stream (HANDOVER=0), a pod's path

Latency (p50, p99) is wrk's with one connection (a request's own cost, no queueing); the
request rate is wrk's with LOAD_CONNECTIONS connections. Goals (issue 6): at most 1 ms added at
p50, at least half the direct request rate -- shown as "time per request under load" (the
inverse of the rate) at most 2x direct's.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from benchmarks.registry import Context, ScenarioError, scenario
from benchmarks.rows import Goal, Row

LOAD_CONNECTIONS = 16
_STEAL_FILTER_PORT = 9080
_STEAL_STREAM_PORT = 9081
_STEAL_FILTER_STREAM_PORT = 9082
# The variants held to the goals (added p50, throughput), each beside "direct".
_HELD = ("steal", "steal+filter", "steal+filter (stream)")
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}
_PERCENTILE = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_RATE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)


@dataclass(frozen=True)
class WrkResult:
    p50_ms: float
    p99_ms: float
    rate: float


def parse_wrk(output: str) -> WrkResult:
    """wrk --latency output -> percentiles in ms and requests per second."""
    percentiles = {int(p): float(v) * _UNITS[u] for p, v, u in _PERCENTILE.findall(output)}
    rate = _RATE.search(output)
    if 50 not in percentiles or 99 not in percentiles or rate is None or not float(rate.group(1)):
        raise ScenarioError(f"unexpected wrk output: {output.strip()[-200:]!r}")
    if re.search(r"Non-2xx or 3xx responses|Socket errors", output):
        raise ScenarioError(f"wrk saw failed requests: {output.strip()[-200:]!r}")
    return WrkResult(percentiles[50], percentiles[99], float(rate.group(1)))


def run_wrk(
    ctx: Context, url: str, connections: int, seconds: float, headers: tuple[str, ...] = ()
) -> WrkResult:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", url]
    for header in headers:
        command += ["-H", header]
    done = subprocess.run(
        ctx.placement.wrap(command), capture_output=True, text=True, timeout=seconds + 60
    )
    if done.returncode != 0:
        raise ScenarioError(f"wrk failed: {done.stderr.strip() or done.stdout.strip()}")
    return parse_wrk(done.stdout)


@dataclass
class Server:
    """A probe-go server (maybe under mirrord-trace) and the URL wrk uses for it."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    headers: tuple[str, ...] = ()
    samples: dict[str, list[float]] = field(default_factory=dict)

    def add(self, metric: str, value: float) -> None:
        self.samples.setdefault(metric, []).append(value)


def _wait_listening(process: subprocess.Popen[bytes], what: str, timeout: float = 60) -> int:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline().decode(errors="replace")
        if line.startswith("listening "):
            return int(line.split()[1])
        if not line and process.poll() is not None:
            break
    stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
    raise ScenarioError(f"{what} did not start: {stderr.strip()[-300:] or 'no message'}")


@contextlib.contextmanager
def _started(
    ctx: Context,
    name: str,
    argv: list[str],
    url: str,
    headers: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> Iterator[Server]:
    process = subprocess.Popen(
        ctx.placement.wrap(argv),
        env=None if env is None else {**os.environ, **env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        port = _wait_listening(process, name)
        # The server logs every request: keep its stdout flowing or it blocks on a full pipe.
        threading.Thread(target=_drain, args=(process.stdout,), daemon=True).start()
        yield Server(name, process, url.format(port=port), headers)
    finally:
        _stop(process)


def _drain(stream: IO[bytes] | None) -> None:
    if stream is not None:
        with contextlib.suppress(OSError, ValueError):
            while stream.read(65536):
                pass


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the program; mirrord-trace then stops its agent (and the steal rules go)."""
    if process.poll() is not None:
        return
    program = _program_child(process.pid) or process.pid
    with contextlib.suppress(ProcessLookupError):
        os.kill(program, 15)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.wait()


def _program_child(pid: int) -> int | None:
    """The traced program, when `pid` is mirrord-trace (its agent is the other child)."""
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split():
                if "probe-go" in Path(f"/proc/{child}/cmdline").read_text(errors="replace"):
                    return int(child)
    return None


def _mirrord_trace() -> str:
    return str(Path(sys.executable).with_name("mirrord-trace"))


def _steal_command(target_pid: int, probe: str, port: int, config: Path | None) -> list[str]:
    command = [_mirrord_trace(), "exec", "--fs-mode", "local", "--target", f"pid/{target_pid}"]
    command += ["-f", str(config)] if config is not None else ["--steal"]
    return [*command, "--", probe, "serve", f":{port}"]


def measure(ctx: Context, servers: list[Server], seconds: float) -> None:
    for server in servers:  # warm-up: connections, caches, the agent's first streams
        run_wrk(ctx, server.url, LOAD_CONNECTIONS, 1, server.headers)
    for _ in range(ctx.repeat):
        for server in servers:
            alone = run_wrk(ctx, server.url, 1, seconds, server.headers)
            loaded = run_wrk(ctx, server.url, LOAD_CONNECTIONS, seconds, server.headers)
            server.add("p50", alone.p50_ms)
            server.add("p99", alone.p99_ms)
            server.add("rate", loaded.rate)
            server.add("time per request", 1e6 / loaded.rate)


def rows(ctx: Context, servers: list[Server]) -> list[Row]:
    out: list[Row] = []
    by_name = {server.name: server for server in servers}
    for server in servers:
        out.append(ctx.row(server.name, "p50", "ms", server.samples["p50"]))
        out.append(ctx.row(server.name, "p99", "ms", server.samples["p99"]))
        out.append(ctx.row(server.name, f"rate ({LOAD_CONNECTIONS} conns)", "req/s",
                           server.samples["rate"]))  # fmt: skip
    direct = by_name["direct"]
    out.append(ctx.row("direct", "time per request under load", "us",
                       direct.samples["time per request"]))  # fmt: skip
    for name in _HELD:
        steal = by_name[name]
        added = [s - d for s, d in zip(steal.samples["p50"], direct.samples["p50"], strict=True)]
        out.append(ctx.row(f"{name}: added p50", "added p50", "ms", added))
        out.append(ctx.row(f"{name}: throughput", "time per request under load", "us",
                           steal.samples["time per request"]))  # fmt: skip
    return out


@scenario(
    "incoming-steal",
    baseline="direct",
    goals={
        **{f"{name}: added p50": Goal(max_median=1.0) for name in _HELD},
        **{f"{name}: throughput": Goal(max_ratio=2.0) for name in _HELD},
    },
)
def incoming_steal(ctx: Context) -> list[Row]:
    """HTTP through steal (and steal+filter) beside the program reached directly (wrk)."""
    if os.geteuid() != 0:
        raise ScenarioError("stealing needs root (a sandbox pod, iptables): run as root")
    if shutil.which("wrk") is None:
        raise ScenarioError("wrk is missing: apt-get install wrk (it is in APT_PACKAGES)")
    from mirrord_trace.incoming.relay import HANDOVER_ENV
    from mirrord_trace.sandbox import SandboxError, down, up

    probe = str(ctx.binary("probe-go"))
    name = f"mtbench{os.getpid()}"
    seconds = 1.0 if ctx.quick else 3.0
    try:
        pod = up(name)
    except SandboxError as error:
        raise ScenarioError(f"the sandbox pod could not be built: {error}") from None
    config = ctx.work_dir / "steal-filter.json"
    config.write_text(json.dumps({"feature": {"network": {"incoming": {
        "mode": "steal",
        "http_filter": {
            "header_filter": "^x-user: me$",
            "ports": [_STEAL_FILTER_PORT, _STEAL_FILTER_STREAM_PORT],
        },
    }}}}))  # fmt: skip
    try:
        with contextlib.ExitStack() as stack:
            servers = [
                stack.enter_context(_started(
                    ctx, "direct", [probe, "serve", "127.0.0.1:0"], "http://127.0.0.1:{port}/"
                )),
                stack.enter_context(_started(
                    ctx, "steal", _steal_command(pod.target_pid, probe, pod.app_port, None),
                    f"http://{pod.target_addr}:{{port}}/",
                )),
                stack.enter_context(_started(
                    ctx, "steal (stream)",
                    _steal_command(pod.target_pid, probe, _STEAL_STREAM_PORT, None),
                    f"http://{pod.target_addr}:{{port}}/",
                    env={HANDOVER_ENV: "0"},
                )),
                stack.enter_context(_started(
                    ctx, "steal+filter",
                    _steal_command(pod.target_pid, probe, _STEAL_FILTER_PORT, config),
                    f"http://{pod.target_addr}:{{port}}/", headers=("x-user: me",),
                )),
                stack.enter_context(_started(
                    ctx, "steal+filter (stream)",
                    _steal_command(pod.target_pid, probe, _STEAL_FILTER_STREAM_PORT, config),
                    f"http://{pod.target_addr}:{{port}}/", headers=("x-user: me",),
                    env={HANDOVER_ENV: "0"},
                )),
            ]  # fmt: skip
            measure(ctx, servers, seconds)
            return rows(ctx, servers)
    finally:
        down(name)
