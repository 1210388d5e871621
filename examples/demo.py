"""The tour (`make demo`): every feature, without and with mirrord-trace, side by side.

A sandbox pod comes up; static Go, static C and busybox-static programs run twice for each
feature. Each line says what was expected and what was seen (✓/✗); the demo exits non-zero if
anything failed, and always tears the sandbox down.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "build" / "bin"
MIRRORD_TRACE = str(ROOT / ".venv" / "bin" / "mirrord-trace")
GREEN, RED, DIM, RESET = "\033[32m", "\033[31m", "\033[2m", "\033[0m"


@dataclass
class Outcome:
    ok: bool
    seen: str


class Tour:
    def __init__(self, sandbox) -> None:  # sandbox: mirrord_trace.sandbox.SandboxInfo
        self.sandbox = sandbox
        self.failures = 0
        self.color = sys.stdout.isatty()

    def target(self) -> list[str]:
        return ["--target", f"pid/{self.sandbox.target_pid}"]

    def run(self, argv: list[str], traced: bool, options: list[str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
        if traced:
            argv = [MIRRORD_TRACE, "exec", *self.target(), *(options or []), "--", *argv]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)

    def line(self, feature: str, program: str, mode: str, expected: str,
             check: Callable[[], Outcome]) -> None:
        try:
            outcome = check()
        except Exception as error:  # one failing step must not hide the others
            outcome = Outcome(False, f"{type(error).__name__}: {error}")
        mark = "✓" if outcome.ok else "✗"
        if self.color:
            mark = f"{GREEN if outcome.ok else RED}{mark}{RESET}"
        seen = outcome.seen.strip().replace("\n", " ⏎ ")[:90]
        print(f" {mark} {feature:<14} {program:<11} {mode:<8} expected {expected}; saw: {seen}")
        self.failures += not outcome.ok

    def pair(self, feature: str, program: str, argv: list[str], *, without: str, with_: str,
             local_ok: Callable[[subprocess.CompletedProcess], bool],
             remote_ok: Callable[[subprocess.CompletedProcess], bool],
             options: list[str] | None = None) -> None:
        def check(traced: bool, ok: Callable[[subprocess.CompletedProcess], bool]) -> Outcome:
            done = self.run(argv, traced, options)
            return Outcome(ok(done), done.stdout or done.stderr or f"exit {done.returncode}")

        self.line(feature, program, "without", without, lambda: check(False, local_ok))
        self.line(feature, program, "with", with_, lambda: check(True, remote_ok))


def programs(busybox_argv: list[str] | None, probe_args: list[str]) -> Iterator[tuple[str, list]]:
    yield "static Go", [str(BIN / "probe-go"), *probe_args]
    yield "static C", [str(BIN / "probe-static"), *probe_args]
    if busybox_argv is not None:
        yield "busybox", [str(BIN / "busybox"), *busybox_argv]


def tour_env(tour: Tour) -> None:
    secret = tour.sandbox.app_secret
    for name, argv in programs(["sh", "-c", "echo ${APP_SECRET:-unset}"], ["env", "APP_SECRET"]):
        tour.pair("env", name, argv, without="APP_SECRET unset", with_="the pod's APP_SECRET",
                  local_ok=lambda d: secret not in d.stdout,
                  remote_ok=lambda d: d.stdout.strip() == secret)


def tour_file_read(tour: Tour) -> None:
    content = tour.sandbox.files["/app/config.yaml"]
    for name, argv in programs(["cat", "/app/config.yaml"], ["cat", "/app/config.yaml"]):
        tour.pair("file read", name, argv, without="no /app/config.yaml",
                  with_="the pod's /app/config.yaml",
                  local_ok=lambda d: d.returncode != 0, remote_ok=lambda d: d.stdout == content)


def tour_file_write(tour: Tour) -> None:
    for name, argv in programs(None, []):
        path = f"/app/data/demo-{name.replace(' ', '-').lower()}.txt"
        inside = Path(str(tour.sandbox.root) + path)

        def written(argv: list[str] = argv, path: str = path, inside: Path = inside) -> Outcome:
            done = tour.run([*argv, "write", path, "written from my laptop"], True,
                            ["--fs-mode", "write"])
            ok = (done.returncode == 0 and inside.exists()
                  and inside.read_text() == "written from my laptop" and not Path(path).exists())
            return Outcome(ok, f"pod has {path}: {inside.exists()}, host has it: "
                               f"{Path(path).exists()}")

        tour.line("file write", name, "with", f"{path} created in the pod only", written)


def tour_dns(tour: Tour) -> None:
    name_ = "api.default.svc.cluster.local"
    address = tour.sandbox.names[name_]
    for name, argv in programs(None, ["resolve", name_]):
        tour.pair("DNS", name, argv, without=f"{name_} does not resolve",
                  with_=f"{name_} -> {address}",
                  local_ok=lambda d: address not in d.stdout,
                  remote_ok=lambda d: address in d.stdout)


def tour_outgoing(tour: Tour) -> None:
    url = "http://api.default.svc.cluster.local/"
    body = tour.sandbox.service_body
    for name, argv in programs(["wget", "-q", "-O", "-", url], ["http-get", url]):
        tour.pair("outgoing", name, argv, without="cluster-only service unreachable",
                  with_="the cluster-only service's body",
                  local_ok=lambda d: body not in d.stdout, remote_ok=lambda d: body in d.stdout)


@contextmanager
def local_server(tour: Tour, options: list[str]) -> Iterator[subprocess.Popen]:
    server = subprocess.Popen(
        [MIRRORD_TRACE, "exec", *tour.target(), *options, "--", str(BIN / "probe-go"), "serve",
         f":{tour.sandbox.app_port}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline() if server.stdout else ""
        if not line.startswith("listening"):
            raise RuntimeError(f"local server did not start: {line or server.stderr.read()}")
        time.sleep(0.3)  # the agent subscribes to the port once the program listens
        yield server
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def wait_for_line(server: subprocess.Popen, prefix: str, timeout: float) -> str | None:
    """The first line of the server's output starting with `prefix`, within `timeout`."""
    found: list[str] = []

    def read() -> None:
        assert server.stdout is not None
        for line in server.stdout:
            if line.startswith(prefix):
                found.append(line.strip())
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    return found[0] if found else None


def http_get(tour: Tour, headers: dict[str, str] | None = None) -> str:
    request = urllib.request.Request(tour.sandbox.app_url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return answer.read().decode()


def tour_incoming(tour: Tour) -> None:
    app_body = tour.sandbox.app_body

    def mirrored() -> Outcome:
        with local_server(tour, []) as server:
            answer = http_get(tour)
            # The copy travels asynchronously (captured, reassembled, then replayed).
            seen = wait_for_line(server, "request GET /", timeout=10)
        ok = answer == app_body and seen is not None
        return Outcome(ok, f"client got {answer!r}; local server saw: {seen!r}")

    def stolen() -> Outcome:
        with local_server(tour, ["--steal"]):
            answer = http_get(tour)
        return Outcome("hello from probe-go" in answer, answer)

    def filtered() -> Outcome:
        config = ROOT / "build" / "demo-filter.json"
        config.write_text(json.dumps({"feature": {"network": {"incoming": {
            "mode": "steal", "http_filter": {"header_filter": "^x-user: me$"}}}}}))
        with local_server(tour, ["-f", str(config)]):
            mine = http_get(tour, {"x-user": "me"})
            theirs = http_get(tour, {"x-user": "someone-else"})
        ok = "hello from probe-go" in mine and theirs == app_body
        return Outcome(ok, f"x-user: me -> {mine.splitlines()[0]!r}; others -> {theirs!r}")

    tour.line("mirror", "static Go", "with", "client answered by the pod, copy seen locally",
              mirrored)
    tour.line("steal", "static Go", "with", "client answered by the local program", stolen)
    tour.line("filtered steal", "static Go", "with", "only x-user: me answered locally", filtered)


def tour_debugger(tour: Tour) -> None:
    """gdb runs the static C probe: the debugged program sees the pod (mirrord-trace uses the
    notification engine for a debugger, so gdb can trace it)."""
    secret = tour.sandbox.app_secret
    argv = ["gdb", "-nx", "-batch", "-ex", "run", "--args", str(BIN / "probe-static"), "env",
            "APP_SECRET"]

    def check(traced: bool) -> Outcome:
        done = tour.run(argv, traced)
        # gdb's own lines ([Inferior 1 ... exited], thread notes) are not the program's
        program = [line for line in done.stdout.splitlines() if not line.startswith(("[", "Using"))]
        seen = " ".join(program) or f"nothing printed (gdb exit {done.returncode})"
        return Outcome((secret in program) == traced, seen)

    tour.line("debugger", "gdb + C", "without", "APP_SECRET unset in the debugged program",
              lambda: check(False))
    tour.line("debugger", "gdb + C", "with", "the pod's APP_SECRET in the debugged program",
              lambda: check(True))


def main() -> int:
    from mirrord_trace.sandbox import down, up

    if os.geteuid() != 0:
        print("make demo needs root (network namespaces, iptables, ptrace)", file=sys.stderr)
        return 2
    name = "mtdemo"
    down(name)  # a demo interrupted earlier leaves nothing in the way
    print("bringing up the sandbox pod ...")
    sandbox = up(name)
    try:
        print(f"sandbox pod: target pid {sandbox.target_pid}, app {sandbox.app_url}\n")
        tour = Tour(sandbox)
        for step in (tour_env, tour_file_read, tour_file_write, tour_dns, tour_outgoing,
                     tour_incoming, tour_debugger):
            step(tour)
    finally:
        down(name)
        print("\nsandbox pod removed")
    if tour.failures:
        print(f"{tour.failures} check(s) failed")
        return 1
    print("every check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
