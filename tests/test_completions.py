"""`completions SHELL` prints a script that a real bash sources and uses: subcommands (also the
ones loaded on first use), flags' choices."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def complete(words: str) -> list[str]:
    script = subprocess.run(
        [BIN / "mirrord-trace", "completions", "bash"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = (
        f"source /dev/stdin; COMP_WORDS=({words}); COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 )); "
        '_mirrord_trace_completion mirrord-trace; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    result = subprocess.run(
        ["bash", "-c", line], input=script, capture_output=True, text=True, check=True,
        env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"},
    )  # fmt: skip
    return result.stdout.split()


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completes_subcommands_and_choices() -> None:
    assert complete("mirrord-trace ver") == ["verify-config"]
    assert complete("mirrord-trace po") == ["port-forward"]
    assert complete("mirrord-trace exec --fs-mode local") == [
        "local",
        "localwithoverrides",
        "local-with-overrides",
    ]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_each_shell_gets_its_script(shell: str) -> None:
    result = subprocess.run(
        [BIN / "mirrord-trace", "completions", shell], capture_output=True, text=True, check=True
    )
    assert "_MIRRORD_TRACE_COMPLETE" in result.stdout
    assert f"{shell}_complete" in result.stdout or f"{shell}_source" in result.stdout


def test_an_unknown_shell_is_a_one_line_error() -> None:
    result = subprocess.run(
        [BIN / "mirrord-trace", "completions", "tcsh"], capture_output=True, text=True
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "'tcsh' is not one of 'bash', 'zsh', 'fish'" in result.stderr
