"""The notification engine (--engine notify): no ptrace held, the program never outlives the
supervisor, and what it leaves behind ends with it, as under the ptrace engine.

Real programs (static C probes, sh, busybox) under the real CLI; the supervisor is killed with
a real SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, example_binary
from tests.test_supervisor import _child_pid_of, _descendants_alive, descendants_of

EXEC = [str(ROOT / ".venv" / "bin" / "mirrord-trace"), "exec"]


def _tracer_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("TracerPid:"):
            return int(line.split()[1])
    raise AssertionError("no TracerPid line")


def _wait_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = pids
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if _descendants_alive(pid)]
        if not alive:
            break
        time.sleep(0.05)
    return alive


@pytest.mark.parametrize("engine", ["ptrace", "notify"])
def test_only_the_ptrace_engine_holds_ptrace(engine: str) -> None:
    probe = str(example_binary("probe-static"))
    supervisor = subprocess.Popen([*EXEC, "--engine", engine, "--", probe, "echo-stdin"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        program = _child_pid_of(supervisor.pid, probe)
        tracer = _tracer_of(program)
        out, _ = supervisor.communicate(b"hello\n", timeout=30)
        assert out == b"hello\n" and supervisor.returncode == 0
        assert (tracer == supervisor.pid) if engine == "ptrace" else (tracer == 0)
    finally:
        supervisor.kill()
        supervisor.wait()


def test_sigkill_of_the_supervisor_kills_the_programs_whole_tree() -> None:
    """A background child and an orphaned grandchild (its parent exited) die too: the guardian
    is their subreaper."""
    probe = str(example_binary("probe-static"))
    script = f'({probe} echo-stdin < /dev/zero > /dev/null &); {probe} echo-stdin'
    supervisor = subprocess.Popen([*EXEC, "--engine", "notify", "--", "sh", "-c", script],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        probes: list[int] = []
        while time.monotonic() < deadline and len(probes) < 2:
            probes = [int(pid) for pid in descendants_of(supervisor.pid)
                      if _exe(pid) == Path(probe).resolve()]
            time.sleep(0.05)
        assert len(probes) == 2, "the probes never started"
        supervisor.kill()
        supervisor.wait(10)
        assert not _wait_gone(probes), "a program process outlived its supervisor"
    finally:
        supervisor.kill()
        supervisor.wait()


@pytest.mark.parametrize("engine", ["ptrace", "notify"])
def test_exit_with_program_ends_what_it_leaves_behind(engine: str, tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    probe = str(example_binary("probe-static"))
    script = f"{probe} echo-stdin < /dev/zero > /dev/null & echo $! > {marker}; exit 7"
    out = subprocess.run([*EXEC, "--engine", engine, "--exit-with-program", "--", "sh", "-c",
                          script], capture_output=True, timeout=60)
    assert out.returncode == 7
    assert not _wait_gone([int(marker.read_text())]), "a left-behind child still runs"


def test_signals_sent_to_the_supervisor_reach_the_program_under_notify() -> None:
    probe = str(example_binary("probe-static"))
    supervisor = subprocess.Popen([*EXEC, "--engine", "notify", "--", probe, "echo-stdin"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        _child_pid_of(supervisor.pid, probe)
        supervisor.send_signal(signal.SIGHUP)
        assert supervisor.wait(10) == 128 + signal.SIGHUP
    finally:
        supervisor.kill()
        supervisor.wait()


def test_an_unknown_engine_is_one_clear_line() -> None:
    out = subprocess.run([*EXEC, "--engine", "magic", "--", "true"], capture_output=True,
                         timeout=60)
    assert out.returncode == 2
    lines = out.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "--engine" in lines[0] and "ptrace" in lines[0], lines


def test_a_missing_program_under_notify_is_127_and_one_line() -> None:
    out = subprocess.run([*EXEC, "--engine", "notify", "--", "/nonexistent/program"],
                         capture_output=True, timeout=60)
    assert out.returncode == 127
    assert len(out.stderr.decode().strip().splitlines()) == 1


def _exe(pid: str) -> Path | None:
    try:
        return Path(os.readlink(f"/proc/{pid}/exe")).resolve()
    except OSError:
        return None


# ---- the features under the notification engine, against the sandbox pod ----------------------

SERVICE_NAME = "api.default.svc.cluster.local"


def _notified(sandbox, *argv: str, options: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*EXEC, "--engine", "notify", "--target", f"pid/{sandbox.target_pid}", *options, "--",
         *argv], capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("binary", ["probe-static", "probe-musl", "probe-dynamic", "probe-go"])
def test_env_and_the_pods_files_under_notify(sandbox, binary: str) -> None:
    probe = str(example_binary(binary))
    env = _notified(sandbox, probe, "env", "APP_SECRET")
    assert env.stdout == f"{sandbox.app_secret}\n", env.stderr
    path, content = next(iter(sandbox.files.items()))
    cat = _notified(sandbox, probe, "cat", path)
    assert (cat.returncode, cat.stdout) == (0, content), cat.stderr
    listing = _notified(sandbox, probe, "ls", str(Path(path).parent))
    assert Path(path).name in listing.stdout.split(), listing.stderr
    stat = _notified(sandbox, probe, "stat", str(Path(path).parent))
    assert "type=directory" in stat.stdout, stat.stderr


@pytest.mark.parametrize("binary", ["probe-go", "probe-static", "probe-musl"])
def test_pod_dns_and_outgoing_tcp_under_notify(sandbox, binary: str) -> None:
    probe = str(example_binary(binary))
    resolved = _notified(sandbox, probe, "resolve", SERVICE_NAME)
    assert sandbox.names[SERVICE_NAME] in resolved.stdout.split(), resolved.stderr
    body = _notified(sandbox, probe, "http-get", f"http://{SERVICE_NAME}/")
    assert body.returncode == 0, body.stderr
    assert body.stdout == sandbox.service_body


def test_chdir_into_a_pod_directory_is_one_clear_line_under_notify(sandbox) -> None:
    path = next(path for path in sandbox.files if path.startswith("/app/"))  # pod-only dir
    out = _notified(sandbox, str(example_binary("probe-static")), "chdir-cat",
                    str(Path(path).parent), Path(path).name)
    assert out.returncode != 0
    notes = [line for line in out.stderr.splitlines() if line.startswith("mirrord-trace:")]
    assert len(notes) == 1 and "chdir" in notes[0] and "ptrace engine" in notes[0], out.stderr


@pytest.mark.parametrize("mode", ["--steal", "mirror"])
def test_incoming_reaches_a_server_under_notify(sandbox, mode: str) -> None:
    from tests.test_incoming import GO_ANSWER, go_serve, pod_get
    from tests.test_incoming_support import traced_server

    options = ("--engine", "notify", *([mode] if mode == "--steal" else []))
    with traced_server(sandbox, go_serve(), *options) as server:
        status, body = pod_get(sandbox, "/")
        if mode == "--steal":
            assert (status, body) == (200, GO_ANSWER + b"GET / HTTP/1.1\n")
        else:
            assert (status, body) == (200, sandbox.app_body.encode())  # the pod answers
        server.wait_for(["request GET / HTTP/1.1"])  # and the program got it (or a copy)


def test_the_engine_key_of_the_config_file_chooses_the_engine(tmp_path: Path) -> None:
    probe = str(example_binary("probe-static"))
    config = tmp_path / "mirrord.json"
    config.write_text('{"engine": "notify"}')
    supervisor = subprocess.Popen([*EXEC, "-f", str(config), "--", probe, "echo-stdin"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert _tracer_of(_child_pid_of(supervisor.pid, probe)) == 0
        supervisor.communicate(b"", timeout=30)
    finally:
        supervisor.kill()
        supervisor.wait()
    config.write_text('{"engine": "strace"}')
    out = subprocess.run([*EXEC, "-f", str(config), "--", probe, "exit", "0"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1 and "engine" in out.stderr, out.stderr


def test_trace_under_notify_shows_each_trapped_call(tmp_path: Path) -> None:
    trace = tmp_path / "trace.txt"
    probe = str(example_binary("probe-static"))
    out = subprocess.run([*EXEC, "--engine", "notify", "--trace", str(trace), "--", probe, "cat",
                          str(tmp_path / "missing")], capture_output=True, timeout=60)
    assert out.returncode != 0
    lines = [line for line in trace.read_text().splitlines() if f"{tmp_path}/missing" in line]
    # The call ran unchanged: only the program saw its result.
    assert lines and all(" allow " in line and line.endswith("= ?") for line in lines), lines


UDP_RECVMSG = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(None if sys.argv[3] == "blocking" else 30)
s.sendto(b"ping", (sys.argv[1], int(sys.argv[2])))
data, ancillary, flags, peer = s.recvmsg(100, 64)
print(data.decode(), peer[0], peer[1])
"""


@pytest.mark.parametrize("mode", ["blocking", "timeout"])
def test_a_udp_reply_read_with_recvmsg_names_the_pods_peer_under_notify(sandbox, mode) -> None:
    """recvmsg runs on a duplicate of the program's socket: the data, and the pod service as
    the source (not the local relay), blocking or non-blocking."""
    out = _notified(sandbox, "python3", "-c", UDP_RECVMSG, sandbox.service_addr,
                    str(sandbox.echo_port), mode, options=("--fs-mode", "local"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ping", sandbox.service_addr, str(sandbox.echo_port)]
