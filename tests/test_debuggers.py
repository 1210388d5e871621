"""Debuggers run and attach to programs under mirrord-trace (issue #14).

Real gdb and strace (Debian packages) on the static C probe, against the sandbox pod where a
test needs a target: the program being debugged sees the target's environment and files, the
debugger itself runs as it would without mirrord-trace. A debugger as the program picks the
notification engine by itself (no --engine); attaching (gdb -p, strace -p) works on a program
started with --engine notify.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, example_binary
from tests.test_supervisor import _child_pid_of

EXEC = [str(ROOT / ".venv" / "bin" / "mirrord-trace"), "exec"]
GREETING = "hello from the configuration"


def _config(tmp_path: Path) -> list[str]:
    file = tmp_path / "mirrord.json"
    file.write_text(json.dumps({"feature": {"env": {"override": {"MT_GREETING": GREETING}}}}))
    return ["-f", str(file)]


def _gdb(*commands: str) -> list[str]:
    return ["gdb", "-nx", "-batch", *[part for command in commands for part in ("-ex", command)]]


def test_gdb_runs_the_program_to_a_breakpoint_and_reads_its_environment(tmp_path: Path) -> None:
    probe = str(example_binary("probe-static"))
    out = subprocess.run(
        [*EXEC, *_config(tmp_path), "--",
         *_gdb("break cmd_env", "run", 'print (char *) getenv("MT_GREETING")', "continue"),
         "--args", probe, "env", "MT_GREETING"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert re.search(r"Breakpoint 1(\.\d+)?, cmd_env", out.stdout), out.stdout
    assert f'"{GREETING}"' in out.stdout  # gdb's print, at the breakpoint
    assert f"\n{GREETING}\n" in out.stdout  # the program's own output after `continue`
    assert "exited normally" in out.stdout
    assert "ptrace: Operation not permitted" not in out.stderr


def test_gdb_catch_syscall_sees_the_programs_calls(tmp_path: Path) -> None:
    target = tmp_path / "data.txt"
    target.write_text("file content\n")
    probe = str(example_binary("probe-static"))
    out = subprocess.run(
        [*EXEC, "--", *_gdb("catch syscall openat", "run", "continue", "delete", "continue"),
         "--args", probe, "cat", str(target)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "Catchpoint 1 (call to syscall openat)" in out.stdout, out.stdout
    assert "Catchpoint 1 (returned from syscall openat)" in out.stdout
    assert "file content" in out.stdout and "exited normally" in out.stdout


def test_gdb_attaches_to_a_program_under_the_notify_engine_and_detaches(tmp_path: Path) -> None:
    probe = str(example_binary("probe-static"))
    program = subprocess.Popen(
        [*EXEC, *_config(tmp_path), "--engine", "notify", "--", probe, "echo-stdin"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        pid = _child_pid_of(program.pid, probe)
        gdb = subprocess.run(
            [*_gdb('print (char *) getenv("MT_GREETING")', "detach"), "-p", str(pid)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert gdb.returncode == 0, gdb.stderr
        assert f'"{GREETING}"' in gdb.stdout, gdb.stdout + gdb.stderr
        assert "detached]" in gdb.stdout
        out, _ = program.communicate(b"still served\n", timeout=30)
        assert (program.returncode, out) == (0, b"still served\n")
    finally:
        program.kill()
        program.wait()


def test_strace_f_traces_the_program_under_mirrord_trace(tmp_path: Path) -> None:
    log = tmp_path / "strace.log"
    data = tmp_path / "data.txt"
    data.write_text("traced content\n")
    probe = str(example_binary("probe-static"))
    out = subprocess.run(
        [*EXEC, "--", "strace", "-f", "-e", "trace=openat", "-o", str(log), probe, "cat",
         str(data)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout == "traced content\n"
    assert f'openat(AT_FDCWD, "{data}", O_RDONLY' in log.read_text()


def test_strace_p_attaches_to_a_program_under_the_notify_engine(tmp_path: Path) -> None:
    log = tmp_path / "strace.log"
    probe = str(example_binary("probe-static"))
    program = subprocess.Popen([*EXEC, "--engine", "notify", "--", probe, "echo-stdin"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    strace = None
    try:
        pid = _child_pid_of(program.pid, probe)
        strace = subprocess.Popen(["strace", "-p", str(pid), "-e", "trace=read,write", "-o",
                                   str(log)], stderr=subprocess.PIPE, text=True)
        # strace says it attached before it traces anything; wait for that line.
        assert strace.stderr is not None
        assert "attached" in strace.stderr.readline()
        assert program.stdin is not None and program.stdout is not None
        program.stdin.write(b"seen by strace\n")
        program.stdin.flush()
        assert program.stdout.readline() == b"seen by strace\n"
        strace.send_signal(signal.SIGINT)  # detaches
        strace.wait(30)
        out, _ = program.communicate(b"after strace\n", timeout=30)
        assert (program.returncode, out) == (0, b"after strace\n")
        assert 'write(1, "seen by strace\\n", 15' in log.read_text()
    finally:
        for process in (program, strace):
            if process is not None:
                process.kill()
                process.wait()


@pytest.mark.parametrize("binary", ["probe-static", "probe-go"])
def test_gdb_debugs_a_program_that_reads_the_pods_files_and_env(sandbox, binary: str) -> None:
    """The target's files and environment reach the debugged program; gdb itself reads the
    host's files (its own start-up) untouched."""
    path, content = next(iter(sandbox.files.items()))
    name, value = next((n, v) for n, v in sandbox.env.items() if n not in ("PWD", "SHLVL"))
    probe = str(example_binary(binary))
    breakpoint = "cmd_cat" if binary == "probe-static" else "main.cmdCat"
    out = subprocess.run(
        [*EXEC, "--target", f"pid/{sandbox.target_pid}", "--",
         *_gdb(f"break {breakpoint}", "run", "delete", "continue"),
         "--args", probe, "cat", path],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert re.search(r"Breakpoint 1(\.\d+)?, ", out.stdout), out.stdout
    assert content in out.stdout
    env = subprocess.run(
        [*EXEC, "--target", f"pid/{sandbox.target_pid}", "--", *_gdb("run"), "--args", probe,
         "env", name],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert f"\n{value}\n" in f"\n{env.stdout}", env.stdout


def test_after_gdb_p_detaches_the_program_goes_on_reading_the_pods_files(sandbox) -> None:
    """Attach to a program (sh) under the notification engine with a target, detach, then the
    program reads a file only the pod has."""
    path, content = next((p, c) for p, c in sandbox.files.items() if p.startswith("/app/"))
    probe = str(example_binary("probe-static"))
    program = subprocess.Popen(
        [*EXEC, "--engine", "notify", "--target", f"pid/{sandbox.target_pid}", "--",
         "/bin/sh", "-c", f'read line; exec {probe} cat {path}'],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        shell = _child_pid_of(program.pid, "/bin/sh")
        gdb = subprocess.run([*_gdb("info inferiors", "detach"), "-p", str(shell)],
                             capture_output=True, text=True, timeout=120)
        assert gdb.returncode == 0 and "detached]" in gdb.stdout, gdb.stdout + gdb.stderr
        out, _ = program.communicate("go\n", timeout=60)
        assert (program.returncode, out) == (0, content)
    finally:
        program.kill()
        program.wait()


def test_gdb_runs_dynamic_curl_against_the_pods_service(sandbox) -> None:
    """A dynamic glibc program under gdb: pod DNS (glibc's resolver) and an outgoing connection
    from the pod."""
    out = subprocess.run(
        [*EXEC, "--target", f"pid/{sandbox.target_pid}", "--",
         *_gdb("set breakpoint pending on", "break connect", "run", "next", "delete",
               "continue"),
         "--args", "curl", "-sS", "--noproxy", "*", "http://api.default.svc.cluster.local/"],
        capture_output=True, timeout=180,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert re.search(rb"Breakpoint 1(\.\d+)?, ", out.stdout), out.stdout
    assert sandbox.service_body.encode() in out.stdout


def test_a_debugger_behind_a_wrapper_is_told_to_use_the_notify_engine() -> None:
    """`env gdb ...`: mirrord-trace sees `env`, keeps ptrace, and says what to do when gdb
    asks to trace; with --engine notify the same command debugs (env execs gdb in place, so
    gdb's own calls still run unchanged)."""
    probe = str(example_binary("probe-static"))
    command = ["env", "MT_WRAPPED=1", *_gdb("run"), "--args", probe, "env", "MT_WRAPPED"]
    refused = subprocess.run([*EXEC, "--", *command], capture_output=True, text=True,
                             timeout=120)
    notes = [line for line in refused.stderr.splitlines() if line.startswith("mirrord-trace:")]
    assert len(notes) == 1 and "--engine notify" in notes[0], refused.stderr
    works = subprocess.run([*EXEC, "--engine", "notify", "--", *command], capture_output=True,
                           text=True, timeout=120)
    assert works.returncode == 0, works.stderr
    assert "\n1\n" in f"\n{works.stdout}" and "exited normally" in works.stdout
