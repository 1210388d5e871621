"""examples/container: the Containerfile builds from files that exist, and its entrypoint hands
PID 1 to mirrord-trace with the program's arguments, the target and the config file intact.

No image builder runs on the test machines: the Containerfile is checked as text against the
repository (what it copies, what pyproject.toml needs copied, what the entrypoint names), and
the entrypoint script runs for real as PID 1 of a new PID namespace, as it would in a container.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, example_binary

EXAMPLE = ROOT / "examples" / "container"
CONTAINERFILE = EXAMPLE / "Containerfile"
ENTRYPOINT = EXAMPLE / "entrypoint.sh"
UNSHARE = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]


@dataclass(frozen=True)
class Copy:
    sources: tuple[str, ...]
    destination: str
    stage: str | None  # --from=STAGE: the sources come from an earlier build stage


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    joined = text.replace("\\\n", " ")
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, arguments = line.partition(" ")
            found.append((keyword.upper(), arguments.strip()))
    return found


def copies(parsed: list[tuple[str, str]]) -> list[Copy]:
    result = []
    for keyword, arguments in parsed:
        if keyword not in ("COPY", "ADD"):
            continue
        words = json.loads(arguments) if arguments.startswith("[") else shlex.split(arguments)
        options = [word for word in words if word.startswith("--")]
        paths = [word for word in words if not word.startswith("--")]
        stage = next((o.split("=", 1)[1] for o in options if o.startswith("--from=")), None)
        result.append(Copy(tuple(paths[:-1]), paths[-1], stage))
    return result


PARSED = instructions(CONTAINERFILE.read_text())
COPIES = copies(PARSED)


def test_every_copy_source_exists_in_the_build_context() -> None:
    context_copies = [copy for copy in COPIES if copy.stage is None]
    assert context_copies, "the Containerfile copies nothing from the repository"
    for copy in context_copies:
        for source in copy.sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"


def test_copies_from_stages_name_an_earlier_stage() -> None:
    stages = [
        arguments.split()[-1]
        for keyword, arguments in PARSED
        if keyword == "FROM" and " AS " in f" {arguments.upper()} "
    ]
    for copy in COPIES:
        if copy.stage is not None:
            assert copy.stage in stages, f"COPY --from={copy.stage}: no such stage {stages}"


def test_the_application_stage_builds_a_go_module() -> None:
    # `COPY examples/probe-go/ ./` then `go build .`: the directory must be a Go main module.
    go_sources = [s for copy in COPIES if copy.stage is None for s in copy.sources
                  if s.rstrip("/").endswith("probe-go")]
    assert go_sources, "the application stage copies no Go module"
    module = ROOT / go_sources[0]
    assert (module / "go.mod").is_file()
    assert any("package main" in f.read_text() for f in module.glob("*.go"))


def test_pip_install_gets_everything_pyproject_packages() -> None:
    """`pip install .` in the image sees only what was copied: the readme pyproject names and
    every top-level package its package discovery includes."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    copied = {source.rstrip("/") for copy in COPIES if copy.stage is None
              for source in copy.sources}
    assert "pyproject.toml" in copied
    assert project["project"]["readme"] in copied
    for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]:
        package = pattern.rstrip("*")
        assert package in copied, f"package {package} is not copied into the image"
        assert (ROOT / package / "__init__.py").is_file()


def test_the_entrypoint_is_the_copied_script_and_executable() -> None:
    entrypoint = next(json.loads(arguments) for keyword, arguments in PARSED
                      if keyword == "ENTRYPOINT")
    script_copy = next(copy for copy in COPIES if copy.destination == entrypoint[0])
    assert script_copy.sources == ("examples/container/entrypoint.sh",)
    # COPY keeps the mode: an exec-form ENTRYPOINT needs the execute bit.
    assert os.access(ENTRYPOINT, os.X_OK)


@pytest.mark.parametrize("shell", ["/bin/sh", "busybox"])
def test_the_entrypoint_is_valid_sh(shell: str) -> None:
    command = [str(example_binary("busybox")), "sh"] if shell == "busybox" else [shell]
    checked = subprocess.run([*command, "-n", str(ENTRYPOINT)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def run_entrypoint(argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    """The entrypoint as PID 1 of a new PID namespace, with mirrord-trace on PATH."""
    environment = {
        "PATH": f"{ROOT / '.venv' / 'bin'}:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/root"),
        **env,
    }
    return subprocess.run([*UNSHARE, str(ENTRYPOINT), *argv], capture_output=True, text=True,
                          env=environment, timeout=60)


def test_entrypoint_makes_mirrord_trace_pid_1_and_passes_arguments_and_status() -> None:
    # Without `exec`, the shell would stay PID 1 and the program's parent would be pid 2.
    program = 'echo "ppid=$PPID"; printf "<%s>" "$@"; exit 7'
    out = run_entrypoint(["sh", "-c", program, "sh", "a b", "--", "*", ""])
    assert out.returncode == 7, out.stderr
    assert out.stdout == "ppid=1\n<a b><--><*><>"


def test_entrypoint_passes_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "with space" / "mirrord.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"feature": {"fs": {"not_found": ["^/etc/hostname$"]}}}))
    hidden = run_entrypoint(["cat", "/etc/hostname"], MIRRORD_TRACE_CONFIG=str(config))
    assert hidden.returncode != 0
    assert "No such file or directory" in hidden.stderr
    shown = run_entrypoint(["cat", "/etc/hostname"])
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == Path("/etc/hostname").read_text()


def test_entrypoint_passes_the_target() -> None:
    # A fresh PID namespace holds only a few pids: 999999 is certainly not one of them.
    out = run_entrypoint(["true"], MIRRORD_TRACE_TARGET="pid/999999")
    assert out.returncode == 1
    assert "there is no process with pid 999999" in out.stderr
