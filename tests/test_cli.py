"""The `mirrord-trace` console script, run as a user runs it: one error line for every user
mistake, normal --help, --version, exit statuses passed through, the program's environment."""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import mirrord_trace

SCRIPT = Path(sys.executable).parent / "mirrord-trace"
ERROR_PREFIX = "mirrord-trace: error: "


@pytest.fixture
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="mirrord-trace-cli-") as path:
        yield Path(path)


def cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    assert SCRIPT.exists(), f"{SCRIPT} is missing: install the package (make venv)"
    return subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=cwd,
        check=False,
    )


def assert_one_error_line(result: subprocess.CompletedProcess[str], status: int) -> str:
    """Exactly one stderr line of the form `mirrord-trace: error: <what> (<what to do>)`."""
    assert result.returncode == status, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith(ERROR_PREFIX), line
    assert line.endswith(")") and " (" in line, line
    assert "Traceback" not in line
    return line


def test_version() -> None:
    result = cli("--version")
    assert result.returncode == 0
    assert result.stdout == f"mirrord-trace {mirrord_trace.__version__}\n"
    assert mirrord_trace.__version__ == importlib.metadata.version("mirrord-trace")


def test_help_stays_normal() -> None:
    result = cli("exec", "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("Usage: mirrord-trace exec [OPTIONS] [PROGRAM]...")
    for flag in (
        "--target",
        "--target-namespace",
        "--context",
        "--config-file",
        "--trace",
        "--fs-mode",
        "--override-env-vars-include",
        "--override-env-vars-exclude",
        "--no-outgoing",
        "--no-tcp-outgoing",
        "--no-udp-outgoing",
        "--no-remote-dns",
        "--steal",
        "--ephemeral-container",
        "--agent-ttl",
    ):
        assert flag in result.stdout
    top = cli("--help")
    assert top.returncode == 0 and "exec" in top.stdout and "sandbox" in top.stdout


USAGE_ERRORS = [
    (["exec"], "missing PROGRAM"),
    (["exec", "--"], "missing PROGRAM"),
    (["exec", "--bogus", "--", "true"], "'--bogus'"),
    (["exec", "--stael", "--", "true"], "(did you mean --steal or "),
    (["frobnicate"], "'frobnicate'"),
    (["exec", "-t", "foo/bar", "--", "true"], "'foo/bar' is not a target"),
    (["exec", "-t", "pid/abc", "--", "true"], "pid must be a positive integer"),
    (["exec", "-t", "statefulset/web", "--", "true"], "not supported"),
    (["exec", "-t"], "'-t' requires an argument"),
    (["exec", "-n", "Not_A_Namespace", "--", "true"], "'Not_A_Namespace'"),
    (["exec", "--fs-mode", "reed", "--", "true"], "'reed'"),
    (["exec", "--agent-ttl", "70000", "--", "true"], "70000"),
    (["exec", "--agent-ttl", "soon", "--", "true"], "'soon'"),
    (["exec", "-s", "A=B", "--", "true"], "'A=B'"),
    (["exec", "-x", "OK;X=Y", "--", "true"], "'X=Y'"),
    (["exec", "-f", "/nonexistent/mirrord.json", "--", "true"], "no such file"),
    (["exec", "--trace", "/nonexistent/dir/trace.log", "--", "true"], "cannot write the trace"),
]


@pytest.mark.parametrize(("args", "fragment"), USAGE_ERRORS)
def test_usage_errors_are_one_line_with_status_2(args: list[str], fragment: str) -> None:
    line = assert_one_error_line(cli(*args), 2)
    assert fragment in line


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("c.json", '{"feature": {"fs": {"mode": "reed"}}}', "feature.fs.mode: 'reed' is not one"),
        ("c.yaml", "feature:\n  netwrk: {}\n", "feature.netwrk: unknown key"),
        ("c.toml", "[agent]\nttl = -5\n", "agent.ttl: -5"),
        ("c.json", '{"feature": ', "invalid JSON at line 1"),
        ("c.yaml", "a: [\n", "invalid YAML"),
        ("c.toml", "x = \n", "invalid TOML"),
        ("c.txt", "{}", "unknown file type '.txt'"),
        (
            "c.json",
            '{"feature": {"network": {"outgoing": {"filter": {"remote": ["::1"]}}}}}',
            "feature.network.outgoing.filter.remote: '::1'",
        ),
    ],
)
def test_config_file_errors_are_one_line_with_status_2(
    workdir: Path, name: str, content: str, fragment: str
) -> None:
    path = workdir / name
    path.write_text(content)
    line = assert_one_error_line(cli("exec", "-f", str(path), "--", "true"), 2)
    assert fragment in line
    assert str(path) in line  # which file: either in the message or in the hint


NO_CLUSTER = {**os.environ, "KUBECONFIG": "/nonexistent/kubeconfig"}


@pytest.mark.parametrize("target", ["pod/web", "deployment/api/container/app"])
def test_a_kubernetes_target_without_a_cluster_is_one_line(target: str) -> None:
    line = assert_one_error_line(cli("exec", "-t", target, "--", "true", env=NO_CLUSTER), 1)
    assert "kubeconfig" in line


def test_a_target_flag_wins_over_the_files_target(workdir: Path) -> None:
    path = workdir / "c.json"
    path.write_text('{"target": {"path": "pod/web", "namespace": "shop"}}')
    assert_one_error_line(cli("exec", "-f", str(path), "--", "true", env=NO_CLUSTER), 1)
    result = cli("exec", "-f", str(path), "-t", "targetless", "--", "true", env=NO_CLUSTER)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "program", ["/nonexistent/program", "no-such-program-mirrord-trace", "{data file}", "/etc"]
)
def test_a_missing_program_is_one_line_with_status_127(program: str, workdir: Path) -> None:
    if program == "{data file}":  # a file without any execute bit
        program = str(workdir / "data.txt")
        Path(program).write_text("not a program\n")
        Path(program).chmod(0o644)
    line = assert_one_error_line(cli("exec", "--", program), 127)
    assert program in line


def test_exit_status_and_signal_death_are_passed_through() -> None:
    assert cli("exec", "--", "sh", "-c", "exit 3").returncode == 3
    assert cli("exec", "--", "sh", "-c", "kill -TERM $$").returncode == 128 + 15


def test_program_arguments_after_the_program_are_not_ours() -> None:
    result = cli("exec", "--", "sh", "-c", 'echo "$@"', "sh", "--steal", "-t", "x")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "--steal -t x\n"
    # Without `--`, everything after PROGRAM belongs to the program as well.
    result = cli("exec", "sh", "-c", 'echo "$@"', "sh", "--steal", "--", "-f")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "--steal -- -f\n"


def test_targetless_env_gets_the_configured_override_and_unset(workdir: Path) -> None:
    path = workdir / "c.yaml"
    path.write_text("feature:\n  env:\n    override: {GREETING: hello}\n    unset: aws_profile\n")
    env = {**os.environ, "AWS_PROFILE": "personal", "KEEP_ME": "yes"}
    result = cli("exec", "-f", str(path), "--", "/usr/bin/env", env=env)
    assert result.returncode == 0, result.stderr
    program_env = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert program_env["GREETING"] == "hello"
    assert program_env["KEEP_ME"] == "yes"
    assert "AWS_PROFILE" not in program_env


def test_trace_file_is_written(workdir: Path) -> None:
    trace = workdir / "trace.log"
    result = cli("exec", "--trace", str(trace), "--", "cat", "/etc/hostname")
    assert result.returncode == 0, result.stderr
    assert trace.exists()
    assert "/etc/hostname" in trace.read_text()


def test_a_trace_reader_that_goes_away_stops_the_trace_not_the_program(workdir: Path) -> None:
    # `mirrord-trace exec --trace - -- prog 2>&1 | head -1`: the reader leaves after one line;
    # the program must go on to its end and keep its own exit status.
    done = workdir / "done"
    script = f"for i in $(seq 200); do cat /etc/hostname >/dev/null; done; touch {done}"
    process = subprocess.Popen(
        [str(SCRIPT), "exec", "--trace", "-", "--", "sh", "-c", script],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    assert process.stderr.readline()  # the first trace line
    process.stderr.close()
    assert process.wait(timeout=60) == 0
    assert done.exists()


def test_a_slow_trace_reader_never_loses_lines_silently() -> None:
    import io

    from mirrord_trace.trace_sink import TraceSink

    class Stalled(io.StringIO):
        """A reader that takes nothing until it is released (a paused pager)."""

        def __init__(self) -> None:
            super().__init__()
            import threading

            self.entered = threading.Event()
            self.released = threading.Event()

        def write(self, text: str) -> int:
            self.entered.set()
            self.released.wait()
            return super().write(text)

    stream = Stalled()
    sink = TraceSink(stream, max_pending=10)
    sink.write("first\n")  # taken by the writer thread, which then waits for the reader
    assert stream.entered.wait(timeout=10)
    for number in range(25):
        sink.write(f"line {number}\n")  # never blocks the caller
    stream.released.set()
    sink.close()
    lines = stream.getvalue().splitlines()
    assert lines[:11] == ["first", *(f"line {n}" for n in range(10))]
    assert lines[11] == (
        "mirrord-trace: 15 trace lines dropped here: the trace's reader is slower than the"
        " program"
    )


def test_config_file_and_flags_together_start_the_program(workdir: Path) -> None:
    path = workdir / "c.json"
    path.write_text(json.dumps({"feature": {"fs": "local", "network": {"outgoing": False}}}))
    result = cli(
        "exec", "-f", str(path), "--fs-mode", "read", "--no-remote-dns", "--steal", "--",
        "sh", "-c", "echo started",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == "started\n"


@pytest.fixture
def target_process() -> Iterator[int]:
    """A local process with its own environment, to be used as `--target pid/N`."""
    target_env = {"TARGET_ONLY": "from-target", "SHARED": "target", "PATH": "/target/bin"}
    process = subprocess.Popen(["/bin/sleep", "120"], env=target_env)
    try:
        yield process.pid
    finally:
        process.kill()
        process.wait()


def test_a_local_target_lends_its_environment(target_process: int) -> None:
    show = ["--", "/bin/sh", "-c", 'echo "$TARGET_ONLY|$SHARED|$PATH"']
    local_env = {**os.environ, "SHARED": "local"}
    result = cli("exec", "-t", f"pid/{target_process}", *show, env=local_env)
    assert result.returncode == 0, result.stderr
    # The target's variables are imported (and win), but never its PATH.
    assert result.stdout == f"from-target|target|{os.environ['PATH']}\n"

    result = cli("exec", "-t", f"pid/{target_process}", "-x", "TARGET_*", *show, env=local_env)
    assert result.stdout == f"|target|{os.environ['PATH']}\n"

    result = cli("exec", "-t", f"pid/{target_process}", "-s", "TARGET_ONLY", *show, env=local_env)
    assert result.stdout == f"from-target|local|{os.environ['PATH']}\n"


def test_a_missing_local_target_is_one_line(target_process: int) -> None:
    subprocess.run(["kill", "-9", str(target_process)], check=True)
    os.waitpid(target_process, 0)
    line = assert_one_error_line(cli("exec", "-t", f"pid/{target_process}", "--", "true"), 1)
    assert f"no process with pid {target_process}" in line


def test_an_interrupt_during_start_up_is_one_line(workdir: Path) -> None:
    # A FIFO as the config file holds start-up still (open blocks until a writer comes),
    # so the interrupt lands there for certain.
    fifo = workdir / "config.json"
    os.mkfifo(fifo)
    process = subprocess.Popen(
        [str(SCRIPT), "exec", "-f", str(fifo), "--", "true"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not _blocked_opening_a_fifo(process.pid):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "mirrord-trace never opened the config file"
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    line = assert_one_error_line(result, 130)
    assert "interrupted during start-up" in line


def _blocked_opening_a_fifo(pid: int) -> bool:
    try:
        syscall = Path(f"/proc/{pid}/syscall").read_text().split()
        wchan = Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return False
    # 257 = openat; the kernel waits in wait_for_partner (fifo_open on older kernels).
    return syscall[0] == "257" and wchan in ("wait_for_partner", "fifo_open")
