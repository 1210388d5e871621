"""The incoming benchmark reads wrk's real output (the installed wrk, a real server)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from benchmarks.placement import FREE
from benchmarks.registry import Context, ScenarioError
from benchmarks.scenarios_incoming import parse_wrk, run_wrk
from tests.conftest import BIN_DIR, example_binary


def test_wrk_numbers_come_from_a_real_run(tmp_path: Path) -> None:
    server = subprocess.Popen(
        [str(example_binary("probe-go")), "serve", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline().split()[1])
        ctx = Context("test", FREE, 1, True, BIN_DIR, tmp_path, 60)
        result = run_wrk(ctx, f"http://127.0.0.1:{port}/", connections=2, seconds=1)
    finally:
        server.kill()
        server.wait()
    assert result.rate > 100
    assert 0 < result.p50_ms <= result.p99_ms < 1000


def test_failed_requests_are_not_counted_as_a_measurement() -> None:
    output = (
        "  Latency Distribution\n     50%  100.00us\n     99%    1.00ms\n"
        "  Socket errors: connect 3, read 0, write 0, timeout 0\n"
        "Requests/sec:   1234.00\n"
    )
    with pytest.raises(ScenarioError, match="failed requests"):
        parse_wrk(output)
    assert parse_wrk(output.replace("  Socket errors: connect 3, read 0, write 0, timeout 0\n",
                                    "")).rate == 1234.0  # fmt: skip
