"""IDEs debugging a program under mirrord-trace, driven the way VS Code drives them: the Debug
Adapter Protocol over a socket (tests/dap_client.py) to a real debug adapter — debugpy for a
Python program, `dlv dap` for a static Go one — against the sandbox pod. The test sets a
breakpoint, continues, and reads variables whose values came from the pod (its environment and
a file only the pod has).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import BIN_DIR, ROOT
from tests.dap_client import DapClient

EXEC = [str(ROOT / ".venv" / "bin" / "mirrord-trace"), "exec"]
DLV = BIN_DIR / "dlv"

PYTHON_PROGRAM = """\
import os

secret = os.environ.get("APP_SECRET", "")
with open({path!r}) as config:
    first = config.readline().strip()
print("secret", secret, flush=True)
"""
PYTHON_BREAK_LINE = 6  # the print: both variables are set


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _adapter_port_stays(port: int, tmp_path: Path) -> list[str]:
    """The adapter's port is the IDE's, on this machine: not one to mirror or steal
    (docs/debugging.md). Without this the incoming feature moves the program's listener."""
    config = tmp_path / "mirrord.json"
    config.write_text(json.dumps({"feature": {"network": {"incoming": {"ignore_ports": [port]}}}}))
    return ["-f", str(config)]


def _pod_file(sandbox) -> tuple[str, str]:
    path = next(path for path in sandbox.files if path.startswith("/app/"))
    return path, sandbox.files[path].splitlines()[0].strip()


@contextmanager
def _session(command: list[str], port: int) -> Iterator[tuple[subprocess.Popen, DapClient]]:
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    client = None
    try:
        client = DapClient("127.0.0.1", port)
        yield process, client
    finally:
        if client is not None:
            client.close()
        process.kill()
        process.wait()


def test_debugpy_stops_at_a_breakpoint_and_shows_the_pods_values(sandbox, tmp_path: Path) -> None:
    """`mirrord-trace exec -- python -m debugpy --listen ... app.py`, then an IDE attaches."""
    path, first_line = _pod_file(sandbox)
    program = tmp_path / "app.py"
    program.write_text(PYTHON_PROGRAM.format(path=path))
    port = _free_port()
    command = [*EXEC, "--target", f"pid/{sandbox.target_pid}", *_adapter_port_stays(port, tmp_path),
               "--", sys.executable, "-m", "debugpy", "--listen", f"127.0.0.1:{port}",
               "--wait-for-client", str(program)]
    with _session(command, port) as (process, dap):
        dap.request("initialize", clientID="mirrord-trace-test", adapterID="debugpy",
                    linesStartAt1=True, columnsStartAt1=True, pathFormat="path")
        attach = dap.send("attach", justMyCode=True)
        dap.wait_event("initialized")
        placed = dap.request("setBreakpoints", source={"path": str(program)},
                             breakpoints=[{"line": PYTHON_BREAK_LINE}])
        assert placed["breakpoints"][0]["verified"], placed
        dap.request("configurationDone")
        dap.response_to(attach)
        stopped = dap.wait_event("stopped")
        assert stopped["reason"] == "breakpoint", stopped
        values = dap.variables_at_stop(stopped["threadId"])
        assert values["secret"] == repr(sandbox.app_secret)
        assert values["first"] == repr(first_line)
        dap.request("continue", threadId=stopped["threadId"])
        dap.wait_event("terminated")
        dap.close()  # the adapter (a child the program left running) ends with the IDE's session
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert f"secret {sandbox.app_secret}" in out


GO_PROGRAM = """\
package main

import (
	"bufio"
	"fmt"
	"os"
)

func main() {
	secret := os.Getenv("APP_SECRET")
	file, err := os.Open(POD_PATH)
	if err != nil {
		panic(err)
	}
	first, _ := bufio.NewReader(file).ReadString('\\n')
	fmt.Println("secret", secret, len(first))
}
"""
GO_BREAK_LINE = 16  # the Println: both variables are set


def _go_program(tmp_path: Path, pod_path: str) -> Path:
    """A static Go program (CGO_ENABLED=0) built with optimisations off, as dlv builds it."""
    from examples.go_env import offline_go_environment

    source = tmp_path / "goapp"
    source.mkdir()
    (source / "main.go").write_text(GO_PROGRAM.replace("POD_PATH", json.dumps(pod_path)))
    (source / "go.mod").write_text("module example.com/goapp\n\ngo 1.21\n")
    binary = tmp_path / "goapp.bin"
    env = offline_go_environment(ROOT / "build")
    subprocess.run(["go", "build", "-gcflags=all=-N -l", "-o", str(binary), "."], cwd=source,
                   env=env, check=True, capture_output=True, timeout=300)
    return binary


def _require_dlv() -> None:
    if not DLV.exists():
        pytest.fail(f"{DLV} is missing: run `make dlv` (part of `make setup`)")


def test_dlv_exec_runs_a_static_go_program_to_a_breakpoint(sandbox, tmp_path: Path) -> None:
    _require_dlv()
    path, first_line = _pod_file(sandbox)
    binary = _go_program(tmp_path, path)
    script = tmp_path / "commands.dlv"
    script.write_text(f"break main.go:{GO_BREAK_LINE}\ncontinue\nprint secret\nprint first\n"
                      "continue\nexit\n")
    out = subprocess.run(
        [*EXEC, "--target", f"pid/{sandbox.target_pid}", "--", str(DLV), "exec",
         "--allow-non-terminal-interactive=true", "--init", str(script), str(binary)],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert f'"{sandbox.app_secret}"' in out.stdout, out.stdout + out.stderr
    assert first_line in out.stdout
    assert f"secret {sandbox.app_secret} {len(first_line) + 1}" in out.stdout


def test_dlv_dap_launch_as_vs_code_does(sandbox, tmp_path: Path) -> None:
    """`dlv dap` under mirrord-trace; the client asks it to launch the binary (mode exec)."""
    _require_dlv()
    path, first_line = _pod_file(sandbox)
    binary = _go_program(tmp_path, path)
    port = _free_port()
    # dlv is a debugger: its own calls (its listen too) run as without mirrord-trace.
    command = [*EXEC, "--target", f"pid/{sandbox.target_pid}", "--", str(DLV), "dap",
               "--listen", f"127.0.0.1:{port}"]
    with _session(command, port) as (_, dap):
        dap.request("initialize", clientID="vscode", adapterID="go", linesStartAt1=True,
                    columnsStartAt1=True, pathFormat="path")
        dap.request("launch", mode="exec", program=str(binary))
        dap.wait_event("initialized")
        source = str(tmp_path / "goapp" / "main.go")
        placed = dap.request("setBreakpoints", source={"path": source},
                             breakpoints=[{"line": GO_BREAK_LINE}])
        assert placed["breakpoints"][0]["verified"], placed
        dap.request("configurationDone")
        stopped = dap.wait_event("stopped")
        assert stopped["reason"] == "breakpoint", stopped
        values = dap.variables_at_stop(stopped["threadId"])
        assert values["secret"] == f'"{sandbox.app_secret}"'
        assert values["first"].startswith(f'"{first_line}')
        dap.request("continue", threadId=stopped["threadId"])
        assert dap.wait_event("exited")["exitCode"] == 0
        dap.request("disconnect")


def test_dlv_attaches_to_a_go_program_under_the_notify_engine() -> None:
    _require_dlv()
    probe = str(BIN_DIR / "probe-go")
    program = subprocess.Popen([*EXEC, "--engine", "notify", "--", probe, "echo-stdin"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        from tests.test_supervisor import _child_pid_of

        pid = _child_pid_of(program.pid, probe)
        out = subprocess.run(
            [str(DLV), "attach", str(pid), "--allow-non-terminal-interactive=true", "--init",
             "/dev/stdin"], input="goroutines\nexit\nn\n", capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert "goroutines]" in out.stdout, out.stdout + out.stderr
        echoed, _ = program.communicate(b"after dlv\n", timeout=30)
        assert (program.returncode, echoed) == (0, b"after dlv\n")
    finally:
        program.kill()
        program.wait()


def test_dlv_debug_builds_and_debugs_a_program_that_sees_the_pod(sandbox, tmp_path: Path) -> None:
    """`dlv debug` runs the Go toolchain, then the program, both under the target; dlv's own
    calls run unchanged."""
    from examples.go_env import offline_go_environment

    _require_dlv()
    path, first_line = _pod_file(sandbox)
    source = tmp_path / "goapp"
    source.mkdir()
    (source / "main.go").write_text(GO_PROGRAM.replace("POD_PATH", json.dumps(path)))
    (source / "go.mod").write_text("module example.com/goapp\n\ngo 1.21\n")
    script = tmp_path / "commands.dlv"
    script.write_text(f"break main.go:{GO_BREAK_LINE}\ncontinue\nprint secret\ncontinue\nexit\n")
    out = subprocess.run(
        [*EXEC, "--target", f"pid/{sandbox.target_pid}", "--", str(DLV), "debug",
         "--allow-non-terminal-interactive=true", "--init", str(script)],
        cwd=source, env=offline_go_environment(ROOT / "build"), capture_output=True, text=True,
        timeout=600, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert f'"{sandbox.app_secret}"' in out.stdout, out.stdout + out.stderr
    assert f"secret {sandbox.app_secret} {len(first_line) + 1}" in out.stdout
