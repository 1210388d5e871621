"""Hints a first-time user needs, shown with the error itself (against the sandbox pod)."""

from __future__ import annotations

import subprocess

from tests.test_fs_remote import MIRRORD_TRACE


def exec_in(sandbox, *program: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MIRRORD_TRACE, "exec", "--target", f"pid/{sandbox.target_pid}", "--", *program],
        capture_output=True, text=True, timeout=120,
    )


def test_a_program_that_only_the_target_has_is_named_with_where_programs_run(sandbox) -> None:
    result = exec_in(sandbox, "/entrypoint.sh")
    assert result.returncode == 127
    assert result.stderr == (
        "mirrord-trace: error: program not found: /entrypoint.sh (the target has "
        "/entrypoint.sh, but mirrord-trace runs programs on this machine: install the program "
        "here (or copy it from the target) and run that)\n"
    )


def test_a_program_missing_everywhere_gets_the_plain_hint(sandbox) -> None:
    result = exec_in(sandbox, "no-such-program-anywhere")
    assert result.returncode == 127
    assert "check the program's name and that it is executable" in result.stderr
    assert "the target has" not in result.stderr
