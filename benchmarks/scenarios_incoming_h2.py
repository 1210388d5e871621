"""Incoming HTTP/2 (h2c) through the filtered steal, beside the same server reached directly.

The program is nghttpd (Debian's nghttp2-server, a C HTTP/2 server) serving a small file; the
load generator is h2load (nghttp2-client). Variants, all up at once and measured round by
round (interleaved):

  direct                  nghttpd run natively on this machine, h2load -> 127.0.0.1
  steal+filter            nghttpd under `mirrord-trace exec` with an http_filter every request
                          matches, h2load -> the pod's address: iptables REDIRECT -> the agent,
                          which routes each stream (agent.http.h2_router) to the program over
                          a connection handed over whole (a local target's agent)
  steal+filter (stream)   the same through the session's stream (HANDOVER=0), a pod's path

Latency (p50) is from h2load's per-request log with one connection and one stream at a time;
the request rate is h2load's with LOAD_CONNECTIONS connections, one stream each. Goals (issue
15): at most 1 ms added at p50, at least half the direct rate (time per request under load at
most 2x direct's).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.registry import Context, ScenarioError, scenario
from benchmarks.rows import Goal, Row

LOAD_CONNECTIONS = 16
_LOCAL_PORT = 9090
_STREAM_PORT = 9091
_HELD = ("steal+filter", "steal+filter (stream)")
_RATE = re.compile(r"^finished in [\d.]+m?s, ([\d.]+) req/s", re.MULTILINE)
_COUNTS = re.compile(r"^requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded", re.M)
_HEADER = "x-user: me"


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    url: str
    samples: dict[str, list[float]] = field(default_factory=dict)

    def add(self, metric: str, value: float) -> None:
        self.samples.setdefault(metric, []).append(value)


def parse_h2load(output: str) -> float:
    """h2load's output -> requests per second; ScenarioError when a request failed."""
    rate, counts = _RATE.search(output), _COUNTS.search(output)
    if rate is None or counts is None:
        raise ScenarioError(f"unexpected h2load output: {output.strip()[-200:]!r}")
    if counts.group(2) != counts.group(3):
        raise ScenarioError(f"h2load saw failed requests: {output.strip()[-300:]!r}")
    return float(rate.group(1))


def run_h2load(
    ctx: Context, url: str, connections: int, seconds: float, log: Path | None = None
) -> float:
    command = ["h2load", f"-c{connections}", "-m1", f"-D{seconds:g}", "-H", _HEADER, url]
    if log is not None:
        command.append(f"--log-file={log}")
    done = subprocess.run(
        ctx.placement.wrap(command), capture_output=True, text=True, timeout=seconds + 60
    )
    if done.returncode != 0:
        raise ScenarioError(f"h2load failed: {done.stderr.strip() or done.stdout.strip()}")
    return parse_h2load(done.stdout)


def p50_from_log(log: Path) -> float:
    """The median of h2load's per-request times (its log's third column, microseconds), ms."""
    times = [int(line.split("\t")[2]) for line in log.read_text().splitlines() if line.strip()]
    if not times:
        raise ScenarioError("h2load logged no request")
    return statistics.median(times) / 1000


def _answers_from_program(url: str) -> bool:
    done = subprocess.run(
        ["curl", "-s", "-m", "2", "--http2-prior-knowledge", "-H", _HEADER, url],
        capture_output=True,
        check=False,
    )
    return done.stdout == b"program"


@contextlib.contextmanager
def _started(
    ctx: Context, name: str, argv: list[str], url: str, env: dict[str, str] | None = None
) -> Iterator[Server]:
    process = subprocess.Popen(
        ctx.placement.wrap(argv),
        env=None if env is None else {**os.environ, **env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not _answers_from_program(url):
            if process.poll() is not None or time.monotonic() > deadline:
                stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
                raise ScenarioError(f"{name} did not answer: {stderr.strip()[-300:]}")
            time.sleep(0.2)
        yield Server(name, process, url)
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop nghttpd (or mirrord-trace and, through it, its program and agent)."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, 15)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.wait()


def measure(ctx: Context, servers: list[Server], seconds: float) -> None:
    for server in servers:  # warm-up
        run_h2load(ctx, server.url, LOAD_CONNECTIONS, 1)
    for round_number in range(ctx.repeat):
        for server in servers:
            log = ctx.work_dir / f"h2load-{round_number}-{server.name.replace(' ', '_')}.log"
            run_h2load(ctx, server.url, 1, seconds, log)
            rate = run_h2load(ctx, server.url, LOAD_CONNECTIONS, seconds)
            server.add("p50", p50_from_log(log))
            server.add("rate", rate)
            server.add("time per request", 1e6 / rate)


def rows(ctx: Context, servers: list[Server]) -> list[Row]:
    out: list[Row] = []
    by_name = {server.name: server for server in servers}
    for server in servers:
        out.append(ctx.row(server.name, "p50", "ms", server.samples["p50"]))
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
    "incoming-steal-h2",
    baseline="direct",
    goals={
        **{f"{name}: added p50": Goal(max_median=1.0) for name in _HELD},
        **{f"{name}: throughput": Goal(max_ratio=2.0) for name in _HELD},
    },
)
def incoming_steal_h2(ctx: Context) -> list[Row]:
    """HTTP/2 through the filtered steal beside the server reached directly (h2load)."""
    if os.geteuid() != 0:
        raise ScenarioError("stealing needs root (a sandbox pod, iptables): run as root")
    for tool in ("h2load", "nghttpd", "curl"):
        if shutil.which(tool) is None:
            raise ScenarioError(f"{tool} is missing: `make setup` installs it (APT_PACKAGES)")
    from mirrord_trace.incoming.relay import HANDOVER_ENV
    from mirrord_trace.sandbox import SandboxError, down, up

    name = f"mth2bench{os.getpid()}"
    seconds = 1.0 if ctx.quick else 3.0
    htdocs = ctx.work_dir / "h2-htdocs"
    htdocs.mkdir(parents=True, exist_ok=True)
    (htdocs / "who").write_text("program")
    config = ctx.work_dir / "steal-filter-h2.json"
    config.write_text(json.dumps({"feature": {"network": {"incoming": {
        "mode": "steal",
        "http_filter": {"header_filter": f"^{_HEADER}$", "ports": [_LOCAL_PORT, _STREAM_PORT]},
    }}}}))  # fmt: skip
    direct_port = _free_port()
    try:
        pod = up(name)
    except SandboxError as error:
        raise ScenarioError(f"the sandbox pod could not be built: {error}") from None
    mirrord_trace = [
        str(Path(sys.executable).with_name("mirrord-trace")), "exec", "--fs-mode", "local",
        "--target", f"pid/{pod.target_pid}", "-f", str(config), "--",
    ]  # fmt: skip

    def nghttpd(port: int) -> list[str]:
        return ["nghttpd", "--no-tls", "-d", str(htdocs), str(port)]

    try:
        with contextlib.ExitStack() as stack:
            servers = [
                stack.enter_context(_started(
                    ctx, "direct", nghttpd(direct_port), f"http://127.0.0.1:{direct_port}/who"
                )),
                stack.enter_context(_started(
                    ctx, "steal+filter", [*mirrord_trace, *nghttpd(_LOCAL_PORT)],
                    f"http://{pod.target_addr}:{_LOCAL_PORT}/who",
                )),
                stack.enter_context(_started(
                    ctx, "steal+filter (stream)", [*mirrord_trace, *nghttpd(_STREAM_PORT)],
                    f"http://{pod.target_addr}:{_STREAM_PORT}/who", env={HANDOVER_ENV: "0"},
                )),
            ]  # fmt: skip
            measure(ctx, servers, seconds)
            return rows(ctx, servers)
    finally:
        down(name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
