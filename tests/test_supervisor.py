"""Programs run under `mirrord-trace exec --` (targetless) behave exactly as without it.

Real static (glibc, musl, Go) and dynamic programs, real signals, real exit statuses.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from examples.go_env import offline_go_environment
from tests.conftest import BIN_DIR, ROOT, example_binary

EXEC = [str(ROOT / ".venv" / "bin" / "mirrord-trace"), "exec"]
MIRRORD_TRACE = EXEC  # with the engine under test, set by the fixture below


@pytest.fixture(params=["ptrace", "notify"])
def engine(request: pytest.FixtureRequest) -> str:
    """Every test runs under both engines unless it names one (direct parametrization)."""
    return request.param


@pytest.fixture(autouse=True)
def _engine_flag(engine: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules[__name__], "MIRRORD_TRACE", [*EXEC, "--engine", engine])


def run_both(argv: list[str], **kwargs) -> tuple[subprocess.CompletedProcess, ...]:
    native = subprocess.run(argv, capture_output=True, timeout=120, **kwargs)
    traced = subprocess.run([*MIRRORD_TRACE, "--", *argv], capture_output=True, timeout=120,
                            **kwargs)
    return native, traced


def assert_same(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    native, traced = run_both(argv, **kwargs)
    assert (traced.returncode, traced.stdout, traced.stderr) == (
        native.returncode,
        native.stdout,
        native.stderr,
    )
    return traced


@pytest.mark.parametrize("binary", ["probe-static", "probe-musl", "probe-dynamic", "probe-go"])
def test_file_reads_and_listing_match_native(binary: str, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("alpha\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "link").symlink_to("a.txt")
    probe = str(example_binary(binary))
    out = assert_same([probe, "cat", str(tmp_path / "link")])
    assert out.stdout == b"alpha\n"
    assert_same([probe, "ls", str(tmp_path)])
    assert_same([probe, "stat", str(tmp_path / "a.txt")])
    assert_same([probe, "readlink", str(tmp_path / "link")])
    missing = assert_same([probe, "cat", str(tmp_path / "missing")])
    assert missing.returncode != 0


@pytest.mark.parametrize("binary", ["probe-static", "probe-musl", "probe-dynamic", "probe-go"])
@pytest.mark.parametrize("status", [0, 3, 255])
def test_exit_status_passes_through(binary: str, status: int) -> None:
    out = assert_same([str(example_binary(binary)), "exit", str(status)])
    assert out.returncode == status


@pytest.mark.parametrize("binary", ["probe-static", "probe-go"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL, signal.SIGSEGV, signal.SIGUSR1])
def test_signal_death_is_128_plus_n(binary: str, sig: signal.Signals) -> None:
    argv = [str(example_binary(binary)), "raise", str(int(sig))]
    native = subprocess.run(argv, capture_output=True, timeout=60)
    traced = subprocess.run([*MIRRORD_TRACE, "--", *argv], capture_output=True, timeout=60)
    # A shell reports death by signal N as 128+N; Go's runtime turns SIGSEGV into exit 2.
    expected = 128 - native.returncode if native.returncode < 0 else native.returncode
    assert traced.returncode == expected
    if binary == "probe-static":
        assert traced.returncode == 128 + sig


def test_stdin_stdout_stderr_untouched() -> None:
    payload = os.urandom(300_000)
    probe = str(example_binary("probe-static"))
    traced = subprocess.run([*MIRRORD_TRACE, "--", probe, "echo-stdin"], input=payload,
                            capture_output=True, timeout=60)
    assert traced.returncode == 0
    assert traced.stdout == payload
    err = subprocess.run([*MIRRORD_TRACE, "--", probe, "cat", "/nonexistent/x"],
                         capture_output=True, timeout=60)
    assert err.stdout == b""
    assert b"/nonexistent/x" in err.stderr


def test_go_many_goroutines_trapped_calls_no_deadlock() -> None:
    """64 goroutines x 1,000 trapped calls each: all finish, none lost."""
    traced = subprocess.run(
        [*MIRRORD_TRACE, "--", str(example_binary("probe-go")), "goroutines", "64", "1000"],
        capture_output=True,
        timeout=300,
    )
    assert traced.returncode == 0, traced.stderr
    assert b"total=64000" in traced.stdout


def test_c_threads_trapped_calls() -> None:
    traced = subprocess.run(
        [*MIRRORD_TRACE, "--", str(example_binary("probe-static")), "threads", "16", "500"],
        capture_output=True,
        timeout=300,
    )
    native = subprocess.run(
        [str(example_binary("probe-static")), "threads", "16", "500"], capture_output=True
    )
    assert traced.returncode == 0, traced.stderr
    assert traced.stdout == native.stdout


def test_shell_script_spawning_children(tmp_path: Path) -> None:
    file = tmp_path / "f.txt"
    file.write_text("from a grandchild\n")
    out = assert_same(["sh", str(ROOT / "examples" / "scripts" / "spawn.sh"), "5", str(file)])
    assert out.returncode == 5
    assert b"from a grandchild" in out.stdout


def test_fork_exec_and_busybox(tmp_path: Path) -> None:
    busybox = str(example_binary("busybox"))
    (tmp_path / "x").write_text("hello busybox\n")
    assert_same([str(example_binary("probe-static")), "fork-exec", busybox, "cat",
                 str(tmp_path / "x")])
    assert_same([busybox, "ls", "-la", str(tmp_path)])
    assert_same([busybox, "sh", "-c", f"cat {tmp_path}/x | wc -c; exit 4"])


LIST_ETC = "import os, json; print(json.dumps(sorted(os.listdir('/etc'))))"


@pytest.mark.parametrize("argv", [["ls", "-la", "/etc"], [sys.executable, "-c", LIST_ETC]])
def test_dynamic_programs(argv: list[str]) -> None:
    assert_same(argv)


def test_go_run_module(tmp_path: Path) -> None:
    """`go run .` builds with the toolchain (many processes, threads, execs) under the tracer."""
    data = tmp_path / "data.txt"
    data.write_text("content for go run\n")
    env = offline_go_environment(ROOT / "build", {**os.environ, "GREETING": "hi"})
    native, traced = run_both(["go", "run", ".", str(data)],
                              cwd=ROOT / "examples" / "go-run-module", env=env)
    assert native.returncode == 0, native.stderr
    assert (traced.returncode, traced.stdout) == (native.returncode, native.stdout)
    assert b"content for go run" in traced.stdout


@pytest.mark.parametrize("engine", ["ptrace"])
def test_trace_shows_paths_of_openat_and_newfstatat(tmp_path: Path) -> None:
    target = tmp_path / "traced.txt"
    target.write_text("x")
    for binary in ("probe-static", "probe-go", "probe-dynamic"):
        trace = tmp_path / f"{binary}.trace"
        out = subprocess.run(
            [*MIRRORD_TRACE, "--trace", str(trace), "--", str(example_binary(binary)),
             "stat", str(target)], capture_output=True, timeout=60)
        assert out.returncode == 0
        lines = trace.read_text().splitlines()
        mine = [line for line in lines if f'"{target}"' in line]
        assert mine, lines
        assert any("newfstatat(" in line or "statx(" in line for line in mine), mine
        assert all(line.endswith("= 0") for line in mine), mine
    trace = tmp_path / "cat.trace"
    subprocess.run([*MIRRORD_TRACE, "--trace", str(trace), "--", str(BIN_DIR / "probe-static"),
                    "cat", str(tmp_path / "nope")], capture_output=True, timeout=60)
    assert any(f'openat(AT_FDCWD, "{tmp_path}/nope"' in line and "ENOENT" in line
               for line in trace.read_text().splitlines())


def _descendants_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ")[1][0] != "Z"


def descendants_of(pid: int) -> list[str]:
    """All descendants (the notification engine's program is the guardian's child)."""
    found, pending = [], [str(pid)]
    while pending:
        current = pending.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                children = Path(f"/proc/{current}/task/{tid}/children").read_text().split()
            except OSError:
                continue
            found += children
            pending += children
    return found


def _child_pid_of(parent: int, program: str, timeout: float = 10.0) -> int:
    """The supervisor's descendant once it has exec'd `program` (not the pre-exec fork)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in descendants_of(parent):
            try:
                if Path(f"/proc/{child}/exe").resolve() == Path(program).resolve():
                    return int(child)
            except OSError:
                continue
        time.sleep(0.05)
    raise AssertionError("the program never started")


def test_sigkill_of_supervisor_kills_program() -> None:
    supervisor = subprocess.Popen([*MIRRORD_TRACE, "--", str(example_binary("probe-static")),
                                   "echo-stdin"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        program = _child_pid_of(supervisor.pid, supervisor.args[-2])
        supervisor.kill()
        supervisor.wait(10)
        deadline = time.monotonic() + 5
        while _descendants_alive(program) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _descendants_alive(program), "the program outlived its supervisor"
    finally:
        supervisor.kill()
        supervisor.wait()


def test_sigterm_to_supervisor_reaches_program() -> None:
    supervisor = subprocess.Popen([*MIRRORD_TRACE, "--", str(example_binary("probe-go")),
                                   "echo-stdin"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        _child_pid_of(supervisor.pid, supervisor.args[-2])
        time.sleep(0.2)
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(10) == 128 + signal.SIGTERM
    finally:
        supervisor.kill()
        supervisor.wait()


def test_stop_and_continue_program() -> None:
    """Job control: SIGSTOP/SIGCONT to the program stop and resume it under the tracer."""
    supervisor = subprocess.Popen([*MIRRORD_TRACE, "--", str(example_binary("probe-static")),
                                   "echo-stdin"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        program = _child_pid_of(supervisor.pid, supervisor.args[-2])
        os.kill(program, signal.SIGSTOP)
        deadline = time.monotonic() + 5
        state = ""
        while time.monotonic() < deadline:
            state = Path(f"/proc/{program}/stat").read_text().split(") ")[1][0]
            if state in "Tt":
                break
            time.sleep(0.02)
        assert state in "Tt"
        os.kill(program, signal.SIGCONT)
        out, _ = supervisor.communicate(b"still alive\n", timeout=10)
        assert out == b"still alive\n"
        assert supervisor.returncode == 0
    finally:
        supervisor.kill()
        supervisor.wait()


def test_io_uring_is_refused_with_enosys() -> None:
    code = ("import ctypes, sys; libc = ctypes.CDLL(None, use_errno=True); "
            "buf = ctypes.create_string_buffer(120); r = libc.syscall(425, 8, buf); "
            "print(r, ctypes.get_errno())")
    traced = subprocess.run([*MIRRORD_TRACE, "--", sys.executable, "-c", code],
                            capture_output=True, timeout=60)
    assert traced.stdout.split() == [b"-1", b"38"]


@pytest.mark.parametrize("engine", ["ptrace"])
def test_refused_tracing_is_one_clear_line() -> None:
    """Under another tracer (strace -f), ptrace is refused: one line, nothing started."""
    out = subprocess.run(["strace", "-f", "-o", "/dev/null", *MIRRORD_TRACE, "--", "true"],
                         capture_output=True, timeout=60)
    assert out.returncode == 1
    lines = out.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "cannot trace the program" in lines[0], lines


def test_seccomp_refused_is_one_clear_line() -> None:
    """A container profile that forbids seccomp(2): one line naming seccomp, not 'not found'."""
    wrapper = (
        "import os, sys\n"
        "from seccomp import Errno, Rule, build_filter, install_filter, syscall_number\n"
        "install_filter(build_filter([Rule(syscall_number('seccomp'), Errno(1))]))\n"
        "os.execv(sys.argv[1], sys.argv[1:])\n"
    )
    out = subprocess.run([sys.executable, "-c", wrapper, *MIRRORD_TRACE, "--", "true"],
                         capture_output=True, timeout=60)
    assert out.returncode == 1
    lines = out.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "cannot install the seccomp filter" in lines[0], lines


@pytest.mark.parametrize("engine", ["ptrace"])
def test_sigterm_during_start_up_interrupts_it(tmp_path: Path) -> None:
    """Start-up held at a FIFO config file; SIGTERM ends it with one line, nothing started."""
    fifo = tmp_path / "config.json"
    os.mkfifo(fifo)
    cli = subprocess.Popen([*MIRRORD_TRACE, "-f", str(fifo), "--", "true"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(1.0)  # blocked opening the FIFO
        cli.send_signal(signal.SIGTERM)
        _, err = cli.communicate(timeout=15)
        assert cli.returncode == 130
        lines = err.decode().strip().splitlines()
        assert len(lines) == 1 and "interrupted during start-up" in lines[0], lines
    finally:
        cli.kill()
        cli.wait()


def test_a_script_without_a_shebang_runs_with_sh_as_a_shell_would_run_it(tmp_path: Path) -> None:
    script = tmp_path / "no-shebang"
    script.write_text('echo "args: $0 $*"\nexit 7\n')
    script.chmod(0o755)
    native = subprocess.run(["sh", "-c", f"{script} one two"], capture_output=True, timeout=60)
    traced = subprocess.run([*MIRRORD_TRACE, "--", str(script), "one", "two"],
                            capture_output=True, timeout=60)
    assert traced.returncode == native.returncode == 7, traced.stderr
    assert traced.stdout == native.stdout == f"args: {script} one two\n".encode()


@pytest.mark.parametrize("engine", ["ptrace"])  # seizing is the ptrace engine's
def test_the_program_never_starts_untraced_when_the_supervisor_dies_before_seizing_it(
    tmp_path: Path,
) -> None:
    # strace (a real tracer, used as a fault injector) kills the supervisor with SIGKILL as it
    # enters its first ptrace call: PTRACE_SEIZE, after fork and before the child's "go".
    # The probe writes to stdout with no trapped call, so it would show even untraced.
    output = tmp_path / "output"
    with output.open("wb") as stdout:
        result = subprocess.run(
            ["strace", "-qq", "-o", "/dev/null", "-e", "trace=ptrace",
             "-e", "inject=ptrace:signal=SIGKILL:when=1",
             *MIRRORD_TRACE, "--", str(example_binary("probe-static")), "env", "HOME"],
            stdout=stdout, stderr=subprocess.PIPE, timeout=120,
        )  # fmt: skip
    assert result.returncode == -signal.SIGKILL, result.stderr  # strace dies as its tracee did
    time.sleep(1)  # the orphaned child, if it ran on, would have printed by now
    assert output.read_bytes() == b""


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(port: int) -> bytes:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
        return response.read()


def test_a_daemonized_server_goes_on_serving_after_the_program_exits(tmp_path: Path) -> None:
    # busybox httpd without -f forks into the background and its parent exits at once.
    (tmp_path / "index.html").write_text("served after the parent left\n")
    port = _free_port()
    command = [*MIRRORD_TRACE, "--", str(example_binary("busybox")), "httpd",
               "-p", f"127.0.0.1:{port}", "-h", str(tmp_path)]
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True) as process:
        assert process.stderr is not None
        try:
            notice = process.stderr.readline()
            assert notice.startswith("mirrord-trace: the program exited (0); waiting for the "
                                     "processes it left running: "), notice
            assert _get(port) == b"served after the parent left\n"
            assert process.poll() is None
            process.send_signal(signal.SIGTERM)  # forwarded to what the program left running
            assert process.wait(timeout=30) == 0  # the program's own status
        finally:
            process.kill()


def test_exit_with_program_ends_what_the_program_left_running(tmp_path: Path) -> None:
    port = _free_port()
    result = subprocess.run(
        [*MIRRORD_TRACE, "--exit-with-program", "--", str(example_binary("busybox")), "httpd",
         "-p", f"127.0.0.1:{port}", "-h", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0
    assert result.stderr.startswith(
        "mirrord-trace: the program exited (0); ending the processes it left running: "
    )
    with pytest.raises(OSError):
        _get(port)


def test_leftovers_that_vanish_unreported_do_not_keep_the_session_waiting(sandbox) -> None:
    # The program's child execs from a second thread: the thread's old id vanishes with no exit
    # event of its own. With a target the local agent is also a child of the supervisor, so a
    # wait for that id would never end.
    script = (
        "import os, threading\n"
        "if os.fork() == 0:\n"
        "    threading.Thread(target=os.execv, args=('/bin/sleep', ['sleep', '1'])).start()\n"
        "    threading.Event().wait()\n"
    )
    result = subprocess.run(
        [*MIRRORD_TRACE, "--target", f"pid/{sandbox.target_pid}", "--",
         sys.executable, "-c", script],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "waiting for the processes it left running" in result.stderr
