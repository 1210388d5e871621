"""`exec --target pid/N` against the sandbox pod: the program sees the target's environment.

The sandbox target is a real chrooted process in its own namespaces; the agent is a real
process that reads its /proc/<pid>/environ.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, example_binary

MIRRORD_TRACE = str(ROOT / ".venv" / "bin" / "mirrord-trace")


def traced(sandbox, *args: str, extra: list[str] | None = None,
           config: dict | None = None, tmp_path: Path | None = None) -> subprocess.CompletedProcess:
    options = ["--target", f"pid/{sandbox.target_pid}", *(extra or [])]
    if config is not None:
        assert tmp_path is not None
        file = tmp_path / "mirrord.json"
        file.write_text(json.dumps(config))
        options += ["-f", str(file)]
    return subprocess.run([MIRRORD_TRACE, "exec", *options, "--", *args],
                          capture_output=True, timeout=120)


@pytest.mark.parametrize("binary", ["probe-go", "probe-dynamic", "probe-static", "probe-musl"])
def test_program_sees_target_env(sandbox, binary: str) -> None:
    probe = str(example_binary(binary))
    out = traced(sandbox, probe, "env", "APP_SECRET")
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().strip() == sandbox.app_secret
    without = subprocess.run([MIRRORD_TRACE, "exec", "--", probe, "env", "APP_SECRET"],
                             capture_output=True, timeout=60)
    assert without.returncode == 1
    assert sandbox.app_secret.encode() not in without.stdout


def test_never_imported_variables_stay_local(sandbox) -> None:
    probe = str(example_binary("probe-static"))
    out = traced(sandbox, probe, "envall")
    env = dict(line.split("=", 1) for line in out.stdout.decode().splitlines() if "=" in line)
    assert env["APP_SECRET"] == sandbox.app_secret
    assert env.get("PYTHONPATH") != "/pod/only"  # a language path variable is never imported
    assert env["PATH"] != "/bin"  # nor PATH
    assert env.get("HOME") != "/root" or Path.home() == Path("/root")


def test_include_exclude_override(sandbox, tmp_path: Path) -> None:
    probe = str(example_binary("probe-go"))
    only_db = traced(sandbox, probe, "envall", extra=["-s", "DATABASE_*"])
    assert b"DATABASE_URL=postgres://db.default.svc.cluster.local" in only_db.stdout
    assert sandbox.app_secret.encode() not in only_db.stdout

    no_secret = traced(sandbox, probe, "envall", extra=["-x", "APP_SEC?ET;APP_MODE"])
    assert b"DATABASE_URL=" in no_secret.stdout
    assert sandbox.app_secret.encode() not in no_secret.stdout
    assert b"APP_MODE=sandbox" not in no_secret.stdout

    config = {"feature": {"env": {"include": ["APP_*"], "override": {"APP_MODE": "local-dev"}}}}
    overridden = traced(sandbox, probe, "envall", config=config, tmp_path=tmp_path)
    assert f"APP_SECRET={sandbox.app_secret}".encode() in overridden.stdout
    assert b"APP_MODE=local-dev" in overridden.stdout
    assert b"DATABASE_URL=postgres" not in overridden.stdout


def test_unknown_pid_is_one_clear_line() -> None:
    out = subprocess.run([MIRRORD_TRACE, "exec", "--target", "pid/999999999", "--", "true"],
                         capture_output=True, timeout=60)
    assert out.returncode != 0
    lines = out.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "999999999" in lines[0], lines


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_to_cli_reaches_program_with_an_agent(sandbox, sig: signal.Signals) -> None:
    """`kill -INT <mirrord-trace>` while an agent session runs: the program gets it, not a
    helper thread of the supervisor (the agent connection's I/O thread must not take it)."""
    probe = str(example_binary("probe-static"))
    cli = subprocess.Popen([MIRRORD_TRACE, "exec", "--target", f"pid/{sandbox.target_pid}", "--",
                            probe, "echo-stdin"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # wait until the program itself runs
            children = Path(f"/proc/{cli.pid}/task/{cli.pid}/children").read_text().split()
            if any(_exe(child) == Path(probe).resolve() for child in children):
                break
            time.sleep(0.05)
        cli.send_signal(sig)
        assert cli.wait(15) == 128 + sig
    finally:
        cli.kill()
        cli.wait()


def _exe(pid: str) -> Path | None:
    try:
        return Path(f"/proc/{pid}/exe").resolve()
    except OSError:
        return None
