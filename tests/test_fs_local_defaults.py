"""A local toolchain's own files stay local by default, wherever they are on this machine.

Against the sandbox pod, with the real `go` toolchain and a real virtual environment: a Go
module in a monorepo whose dependency is a sibling directory (`../lib`) of the working
directory, with the module and build caches in their default places under the home directory,
and a Python virtualenv outside the working directory. Each program must also see the pod
(its environment) to prove it ran under the target.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_fs_remote import MIRRORD_TRACE, SYSTEM_PYTHON


@pytest.fixture
def outside_the_checkout() -> Iterator[Path]:
    """A directory that no default rule names (not /tmp, /home, /opt, the cwd ...)."""
    base = Path("/srv")
    base.mkdir(exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="mirrord-trace-test-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)



def test_go_run_in_a_monorepo_finds_the_sibling_module_locally(
    sandbox, outside_the_checkout: Path
) -> None:
    repo = outside_the_checkout / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "lib").mkdir()
    (repo / "lib" / "go.mod").write_text("module example.com/lib\n\ngo 1.21\n")
    (repo / "lib" / "lib.go").write_text(
        'package lib\n\nfunc Greeting() string { return "hello from ../lib" }\n'
    )
    app = repo / "services" / "app"
    app.mkdir(parents=True)
    (app / "go.mod").write_text(
        "module example.com/app\n\ngo 1.21\n\nrequire example.com/lib v0.0.0\n\n"
        "replace example.com/lib => ../../lib\n"
    )
    (app / "main.go").write_text(
        'package main\n\nimport (\n\t"fmt"\n\t"os"\n\n\t"example.com/lib"\n)\n\n'
        'func main() { fmt.Println(lib.Greeting(), os.Getenv("APP_MODE")) }\n'
    )
    # The user's own settings: default GOPATH and build cache under $HOME, no network.
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GO")}
    environment.update(GOPROXY="off", GOFLAGS="-mod=mod", GOTOOLCHAIN="local",
                       CGO_ENABLED="0")
    result = subprocess.run(
        [MIRRORD_TRACE, "exec", "--target", f"pid/{sandbox.target_pid}", "--",
         shutil.which("go") or "go", "run", "."],
        cwd=app, env=environment, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello from ../lib sandbox\n"


def test_a_virtualenv_outside_the_working_directory_imports_its_packages(
    sandbox, outside_the_checkout: Path
) -> None:
    venv = outside_the_checkout / "env"
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True)
    (site,) = venv.glob("lib/python3*/site-packages")
    (site / "only_in_the_venv.py").write_text("VALUE = 'from the virtualenv'\n")
    script = "import os, only_in_the_venv; print(only_in_the_venv.VALUE, os.environ['APP_MODE'])"
    result = subprocess.run(
        [MIRRORD_TRACE, "exec", "--target", f"pid/{sandbox.target_pid}", "--",
         str(venv / "bin" / "python"), "-c", script],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "from the virtualenv sandbox\n"
