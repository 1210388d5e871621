"""A path looked up in the pod that is not there but exists on this machine: mirrord-trace says
so, names the configuration key that would read it here, once per directory; the key does.

/srv is remote in read mode (no default rule covers it) and the pod has no /srv; the test puts
a directory there on the host and removes it afterwards.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_fs_remote import traced

CAT = "/usr/bin/cat"


@pytest.fixture
def host_only_dir(sandbox) -> Iterator[Path]:
    directory = Path(f"/srv/mirrord-trace-hint-{os.getpid()}")
    assert not sandbox.pod_path(str(directory)).exists()
    directory.mkdir()
    try:
        (directory / "settings.ini").write_text("on this machine\n")
        (directory / "other.ini").write_text("on this machine too\n")
        yield directory
    finally:
        shutil.rmtree(directory)


def test_a_miss_in_the_pod_that_exists_here_names_the_key(sandbox, host_only_dir: Path) -> None:
    settings, other = host_only_dir / "settings.ini", host_only_dir / "other.ini"
    out = traced(sandbox, "/bin/sh", "-c", f"{CAT} {settings}; {CAT} {other}; {CAT} {settings}")
    assert out.returncode != 0
    errors = out.stderr.decode()
    assert "No such file or directory" in errors  # the program's own error, as in the pod
    hint = (
        f"mirrord-trace: {settings} was looked up in the target (remote: fs mode read) and is "
        "not there, but it exists on this machine; to read it here, add a pattern for it to "
        "feature.fs.local"
    )
    assert hint in errors.splitlines()
    assert errors.count("mirrord-trace:") == 1  # once for the directory, not per lookup

    config = {"feature": {"fs": {"local": [f"^{host_only_dir}/"]}}}
    fixed = traced(sandbox, CAT, str(settings), config=config, tmp_path=host_only_dir)
    assert fixed.returncode == 0, fixed.stderr
    assert fixed.stdout == b"on this machine\n"


def test_trace_says_it_at_every_such_lookup(sandbox, host_only_dir: Path) -> None:
    settings = host_only_dir / "settings.ini"
    out = traced(sandbox, CAT, str(settings), options=("--trace", "-"))
    lines = [line for line in out.stderr.decode().splitlines() if "openat" in line
             and str(settings) in line]  # fmt: skip
    assert lines and "not in the target but on this machine" in lines[0]
    assert "feature.fs.local" in lines[0]


def test_the_lines_stop_after_eight_directories(sandbox, host_only_dir: Path) -> None:
    directories = [host_only_dir / f"d{number}" for number in range(10)]
    for directory in directories:
        directory.mkdir()
        (directory / "f").write_text("here\n")
    script = "; ".join(f"{CAT} {directory}/f" for directory in directories)
    out = traced(sandbox, "/bin/sh", "-c", script)
    hints = [line for line in out.stderr.decode().splitlines() if line.startswith("mirrord-trace:")]
    assert [line.split()[1] for line in hints] == [f"{d}/f" for d in directories[:8]]
    assert hints[-1].endswith("(further hints: --trace)")
