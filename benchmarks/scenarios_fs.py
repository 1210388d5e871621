"""Remote filesystem scenarios against the sandbox pod: many small files, one large file.

The program (the system's python3, a dynamic glibc program) times its own opens and reads, so
start-up of the interpreter and of mirrord-trace stays out of the numbers; "native" reads the
same files from the target's root directory on the host. Round trips are counted by the
agent itself (its `stats` request) around a traced probe-static run.

Needs root (the sandbox). MIRRORD_TRACE_BENCH_SANDBOX=<name> uses a running sandbox instead
of building one; MIRRORD_TRACE_BENCH_FS_LARGE_MIB sets the large file's size (default 256,
32 with --quick).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.registry import Context, ScenarioError, scenario
from benchmarks.rows import Goal, Row
from benchmarks.variants import ROOT, mirrord_trace_executable
from mirrord_trace.fs.agent_descriptors import SHARE_ENV

if TYPE_CHECKING:
    from mirrord_trace.sandbox import SandboxInfo

SANDBOX_ENV = "MIRRORD_TRACE_BENCH_SANDBOX"
LARGE_MIB_ENV = "MIRRORD_TRACE_BENCH_FS_LARGE_MIB"
PYTHON = "/usr/bin/python3"
SMALL_FILE_SIZE = 512

# Reads every file named on the command line to the end; prints seconds and bytes.
READER = """
import os, sys, time
buffer = bytearray(1 << 20)
total = 0
start = time.perf_counter()
for path in sys.argv[1:]:
    fd = os.open(path, os.O_RDONLY)
    while count := os.readv(fd, [buffer]):
        total += count
    os.close(fd)
print(time.perf_counter() - start, total)
"""

ROUND_TRIPS = """
import json, os, sys
from mirrord_trace.local_target import LocalAgent
from mirrord_trace.supervisor import run
with LocalAgent(int(sys.argv[1])) as client, open(os.devnull, "wb") as devnull:
    saved = os.dup(1)
    os.dup2(devnull.fileno(), 1)
    try:
        code = run(sys.argv[2:], env=dict(os.environ), agent=client)
    finally:
        os.dup2(saved, 1)
    counts = client.request("stats")["session"]
print(json.dumps({"code": code, "fs": sum(n for k, n in counts.items() if k.startswith("fs."))}))
"""


@contextmanager
def _pod() -> Iterator[SandboxInfo]:
    if os.geteuid() != 0:
        raise ScenarioError("the fs scenarios use the sandbox pod, which needs root")
    from mirrord_trace.sandbox import SandboxError, down, status, up

    existing = os.environ.get(SANDBOX_ENV)
    if existing:
        info = status(existing)
        if info is None or not info.healthy:
            raise ScenarioError(f"{SANDBOX_ENV}={existing}: no healthy sandbox of that name")
        yield info
        return
    name = f"mtbench{os.getpid()}"
    try:
        info = up(name)
    except SandboxError as error:
        raise ScenarioError(f"the sandbox could not be built: {error}") from None
    try:
        yield info
    finally:
        down(name)


def _timed_read(ctx: Context, command: list[str], env: dict[str, str]) -> tuple[float, int]:
    out = subprocess.run(
        ctx.placement.wrap(command), capture_output=True, timeout=ctx.timeout, env=env
    )
    if out.returncode != 0:
        lines = out.stderr.decode(errors="replace").strip().splitlines()
        raise ScenarioError(f"exit status {out.returncode}: {lines[-1] if lines else ''}")
    seconds, total = out.stdout.split()
    return float(seconds), int(total)


def _variants(target_pid: int, root: Path, paths: list[str]) -> dict[str, tuple[list[str], dict]]:
    traced = [str(mirrord_trace_executable()), "exec", "--target", f"pid/{target_pid}", "--"]
    on_host = [str(root / path.lstrip("/")) for path in paths]
    base = dict(os.environ)
    return {
        "native": ([PYTHON, "-c", READER, *on_host], base),
        "mirrord-trace": ([*traced, PYTHON, "-c", READER, *paths], base),
        # The notification engine (debuggers): each open is served by the supervisor (ADDFD).
        "mirrord-trace notify": (
            [*traced[:2], "--engine", "notify", *traced[2:], PYTHON, "-c", READER, *paths], base
        ),
        # What an agent on another machine does: the content crosses the connection.
        "mirrord-trace-streamed": (
            [*traced, PYTHON, "-c", READER, *paths], {**base, SHARE_ENV: "0"}
        ),
    }


def _measure(
    ctx: Context, variants: dict[str, tuple[list[str], dict]], expected_bytes: int
) -> dict[str, list[float]]:
    """Seconds per run for each variant, interleaved round by round after one warm-up."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for round_index in range(ctx.repeat + 1):
        for name, (command, env) in variants.items():
            seconds, total = _timed_read(ctx, command, env)
            if total != expected_bytes:
                raise ScenarioError(f"{name} read {total} bytes, expected {expected_bytes}")
            if round_index:  # the first round warms the page cache and the agent
                samples[name].append(seconds)
    return samples


def _round_trips_per_file(pod: SandboxInfo, paths: list[str]) -> float:
    probe = ROOT / "build" / "bin" / "probe-static"
    out = subprocess.run(
        [sys.executable, "-c", ROUND_TRIPS, str(pod.target_pid), str(probe), "cat", *paths],
        capture_output=True,
        timeout=300,
        cwd=ROOT,
    )
    if out.returncode != 0:
        raise ScenarioError(f"counting round trips failed: {out.stderr.decode().strip()[-200:]}")
    return json.loads(out.stdout)["fs"] / len(paths)


@scenario("fs-small-files", baseline="native")
def small_files(ctx: Context) -> list[Row]:
    """1,000 small pod files opened, read and closed: ms and agent round trips per file."""
    count = 200 if ctx.quick else 1_000
    with _pod() as pod:
        directory = f"/app/bench-small-{os.getpid()}"
        host_dir = pod.pod_path(directory)
        host_dir.mkdir()
        try:
            paths = []
            for number in range(count):
                path = f"{directory}/file-{number:04d}.txt"
                (host_dir / f"file-{number:04d}.txt").write_bytes(
                    f"{number:08d}".encode() * (SMALL_FILE_SIZE // 8)
                )
                paths.append(path)
            variants = _variants(pod.target_pid, pod.root, paths)
            del variants["mirrord-trace-streamed"]  # small files are inline either way
            samples = _measure(ctx, variants, count * SMALL_FILE_SIZE)
            rows = [
                ctx.row(name, "per-file", "ms", [s / count * 1e3 for s in runs])
                for name, runs in samples.items()
            ]
            per_file = _round_trips_per_file(pod, paths)
            rows.append(ctx.row("mirrord-trace", "round-trips", "per file", [per_file]))
            return rows
        finally:
            shutil.rmtree(host_dir, ignore_errors=True)


# The goal is mirrord-trace >= 0.5 x native in MB/s. Goals bound a row's ratio to the baseline
# from above, so it is stated the other way round: native <= 2 x mirrord-trace.
@scenario(
    "fs-large-file",
    baseline="mirrord-trace",
    goals={"native": Goal(max_ratio=2.0)},
)
def large_file(ctx: Context) -> list[Row]:
    """A 256 MiB pod file read sequentially: MB/s beside a native read of the same file."""
    mib = int(os.environ.get(LARGE_MIB_ENV, "32" if ctx.quick else "256"))
    size = mib * 1024 * 1024
    with _pod() as pod:
        path = f"/app/bench-large-{os.getpid()}.bin"
        host_path = pod.pod_path(path)
        try:
            with open(host_path, "wb") as out:
                for _ in range(mib):
                    out.write(os.urandom(1024 * 1024))
            variants = _variants(pod.target_pid, pod.root, [path])
            samples = _measure(ctx, variants, size)
        finally:
            host_path.unlink(missing_ok=True)
    return [
        ctx.row(name, "throughput", "MB/s", [size / seconds / 1e6 for seconds in runs])
        for name, runs in samples.items()
    ]


LINES = b"first line\nsecond line\nthird line\n"
APPENDER = f"""
import sys
with open(sys.argv[1], "ab") as log:
    log.write({LINES!r})
"""


@scenario("fs-append-large", baseline="native")
def append_large(ctx: Context) -> list[Row]:
    """3 lines appended to a 1 GiB pod file in write mode (the whole command, start-up
    included): write-through in ranges moves the lines, not the file (was 20.2 s)."""
    mib = int(os.environ.get(LARGE_MIB_ENV, "64" if ctx.quick else "1024"))
    traced = [str(mirrord_trace_executable()), "exec", "--fs-mode", "write"]
    with _pod() as pod:
        path = f"/app/bench-append-{os.getpid()}.log"
        host_path = pod.pod_path(path)
        try:
            with open(host_path, "wb") as out:
                for _ in range(mib):
                    out.write(os.urandom(1024 * 1024))
            commands = {
                "native": [PYTHON, "-c", APPENDER, str(host_path)],
                "mirrord-trace": [
                    *traced, "--target", f"pid/{pod.target_pid}", "--", PYTHON, "-c", APPENDER,
                    path,
                ],
            }  # fmt: skip
            samples: dict[str, list[float]] = {name: [] for name in commands}
            for round_index in range(ctx.repeat + 1):
                for name, command in commands.items():
                    started = time.perf_counter()
                    out = subprocess.run(
                        ctx.placement.wrap(command), capture_output=True, timeout=ctx.timeout
                    )
                    if out.returncode != 0:
                        raise ScenarioError(f"{name}: {out.stderr.decode().strip()[-200:]}")
                    if round_index:
                        samples[name].append(time.perf_counter() - started)
            expected = mib * 1024 * 1024 + (ctx.repeat + 1) * len(commands) * len(LINES)
            if (size := host_path.stat().st_size) != expected:
                raise ScenarioError(f"the file has {size} bytes, not {expected}")
        finally:
            host_path.unlink(missing_ok=True)
    return [ctx.row(name, "append 3 lines", "s", runs) for name, runs in samples.items()]
