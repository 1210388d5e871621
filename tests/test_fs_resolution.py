"""`..`, symlinks and relative paths of pod paths are resolved in the pod, never on the host.

The host has no /app: an answer about `/app/..` or `/app/../etc/passwd` can only be right if
the pod resolved it. Expected values are read from the pod's root on the host.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_fs_attributes import pod_tmpfs  # noqa: F401 (a fixture)
from tests.test_fs_remote import SYSTEM_PYTHON, pod_file, traced

LS = "/usr/bin/ls"


@pytest.mark.parametrize("engine", ["ptrace", "notify"])
def test_ls_la_of_a_pod_directory_exits_0(sandbox, engine: str) -> None:
    out = traced(sandbox, LS, "-la", "/app", options=("--engine", engine))
    assert out.returncode == 0, out.stderr
    names = [line.split()[-1] for line in out.stdout.decode().splitlines()[1:]]
    assert names[:2] == [".", ".."]


def test_dot_dot_after_a_pod_directory_is_the_pods_parent(sandbox) -> None:
    script = (
        "import os\n"
        "print(os.stat('/app/..').st_ino)\n"
        "print(open('/app/../etc/passwd').read(), end='')\n"  # the pod's /etc, not the host's
        "os.chdir('/app/data')\n"
        "print(open('../config.yaml').read(), end='')\n"
        "os.chdir('..')\n"
        "print(os.getcwd(), sorted(os.listdir('.')))\n"
    )
    out = traced(sandbox, SYSTEM_PYTHON, "-c", script)
    assert out.returncode == 0, out.stderr
    expected = (
        f"{os.stat(sandbox.pod_path('/')).st_ino}\n"
        + pod_file(sandbox, "/etc/passwd").read_text()
        + pod_file(sandbox, "/app/config.yaml").read_text()
        + f"/app {sorted(os.listdir(pod_file(sandbox, '/app')))}\n"
    )
    assert out.stdout.decode() == expected
    assert pod_file(sandbox, "/etc/passwd").read_text() != Path("/etc/passwd").read_text()


@pytest.fixture
def pod_link(sandbox) -> Iterator[str]:
    """/app/deep -> /app/data/items in the pod: `..` after it is /app/data, not /app."""
    host = pod_file(sandbox, "/app/deep")
    host.symlink_to("/app/data/items")
    try:
        yield "/app/deep"
    finally:
        host.unlink()


def test_dot_dot_after_a_pod_symlink_follows_the_link(sandbox, pod_link: str) -> None:
    out = traced(sandbox, "/usr/bin/cat", f"{pod_link}/../greeting.txt")
    assert out.returncode == 0, out.stderr
    assert out.stdout == pod_file(sandbox, "/app/data/greeting.txt").read_bytes()


def test_dot_dot_across_a_pod_mount_point(sandbox, pod_tmpfs: str) -> None:  # noqa: F811
    script = (
        "import os\n"
        f"print(os.stat('{pod_tmpfs}').st_dev != os.stat('{pod_tmpfs}/..').st_dev)\n"
        f"print(os.stat('{pod_tmpfs}/..').st_ino)\n"
        f"print(sorted(os.listdir('{pod_tmpfs}/..')) == sorted(os.listdir('/app')))\n"
    )
    out = traced(sandbox, SYSTEM_PYTHON, "-c", script)
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().split() == [
        "True",
        str(os.stat(pod_file(sandbox, "/app")).st_ino),
        "True",
    ]
