"""Extended attributes, filesystem statistics and inotify on the pod's paths, with the tools people
use every day: coreutils `ls -l`, `stat -f` and `df`, Python's shutil, rsync.

The host has no /app, so every answer about /app came from the pod. Attributes and a tmpfs
mount are put into the pod's root on the host (the sandbox's target sees its root through the
host's mount namespace) and removed afterwards.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_fs_remote import SYSTEM_PYTHON, pod_file, traced

WRITE = ("--fs-mode", "write")
LS = "/usr/bin/ls"  # coreutils: it reads ACLs (getxattr) for every entry of `ls -l`


@pytest.fixture
def pod_dir(sandbox) -> Iterator[tuple[str, Path]]:
    """A pod directory /app/attrs with two files, one carrying user.origin=pod."""
    host = pod_file(sandbox, "/app/attrs")
    host.mkdir()
    try:
        (host / "tagged.txt").write_text("tagged in the pod\n")
        (host / "plain.txt").write_text("plain\n")
        os.setxattr(host / "tagged.txt", "user.origin", b"pod")
        yield "/app/attrs", host
    finally:
        shutil.rmtree(host)


@pytest.mark.parametrize("engine", ["ptrace", "notify"])
def test_ls_l_of_a_pod_directory_prints_no_error(sandbox, pod_dir, engine: str) -> None:
    remote, host = pod_dir
    out = traced(sandbox, LS, "-l", remote, options=("--engine", engine))
    assert out.returncode == 0, out.stderr
    assert out.stderr == b""
    assert sorted(line.split()[-1] for line in out.stdout.decode().splitlines()[1:]) == sorted(
        os.listdir(host)
    )


def test_python_reads_and_lists_the_pod_files_attributes(sandbox, pod_dir) -> None:
    remote, _ = pod_dir
    script = (
        "import os, sys\n"
        f"print(os.getxattr('{remote}/tagged.txt', 'user.origin').decode())\n"
        f"print(os.listxattr('{remote}/tagged.txt'))\n"
        f"fd = os.open('{remote}/tagged.txt', os.O_RDONLY)\n"  # a local copy of the pod file
        "print(os.getxattr(fd, 'user.origin').decode(), os.listxattr(fd))\n"
        "try:\n"
        f"    os.getxattr('{remote}/plain.txt', 'user.origin')\n"
        "except OSError as e:\n"
        "    print(e.errno)\n"
    )
    out = traced(sandbox, SYSTEM_PYTHON, "-c", script)
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().splitlines() == [
        "pod",
        "['user.origin']",
        "pod ['user.origin']",
        str(errno.ENODATA),
    ]


def test_shutil_copy2_and_copytree_copy_from_the_pod(sandbox, pod_dir, tmp_path: Path) -> None:
    remote, host = pod_dir
    script = (
        "import shutil, sys\n"
        f"shutil.copy2('{remote}/tagged.txt', sys.argv[1] + '/one.txt')\n"
        f"shutil.copytree('{remote}', sys.argv[1] + '/tree')\n"
    )
    out = traced(sandbox, SYSTEM_PYTHON, "-c", script, str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "one.txt").read_text() == "tagged in the pod\n"
    assert sorted(os.listdir(tmp_path / "tree")) == sorted(os.listdir(host))
    assert (tmp_path / "tree" / "plain.txt").read_text() == "plain\n"
    # copy2 copies extended attributes: the pod file's, onto the local copy.
    assert os.getxattr(tmp_path / "one.txt", "user.origin") == b"pod"
    assert os.getxattr(tmp_path / "tree" / "tagged.txt", "user.origin") == b"pod"


def test_rsync_archive_from_a_pod_directory(sandbox, pod_dir, tmp_path: Path) -> None:
    remote, host = pod_dir
    rsync = shutil.which("rsync")
    assert rsync, "rsync is in the Makefile's APT_PACKAGES: run make setup"
    out = traced(sandbox, rsync, "-aX", f"{remote}/", f"{tmp_path}/copy/")
    assert out.returncode == 0, out.stderr
    assert sorted(os.listdir(tmp_path / "copy")) == sorted(os.listdir(host))
    assert (tmp_path / "copy" / "tagged.txt").read_text() == "tagged in the pod\n"
    assert os.getxattr(tmp_path / "copy" / "tagged.txt", "user.origin") == b"pod"


def test_attribute_changes_go_to_the_pod_in_write_mode_only(sandbox, pod_dir) -> None:
    remote, host = pod_dir
    set_it = f"import os; os.setxattr('{remote}/plain.txt', 'user.note', b'written')"
    read_mode = traced(sandbox, SYSTEM_PYTHON, "-c", set_it)
    assert read_mode.returncode != 0
    assert "Read-only file system" in read_mode.stderr.decode()
    assert "user.note" not in os.listxattr(host / "plain.txt")

    write_mode = traced(sandbox, SYSTEM_PYTHON, "-c", set_it, options=WRITE)
    assert write_mode.returncode == 0, write_mode.stderr
    assert os.getxattr(host / "plain.txt", "user.note") == b"written"
    remove = f"import os; os.removexattr('{remote}/plain.txt', 'user.note')"
    removed = traced(sandbox, SYSTEM_PYTHON, "-c", remove, options=WRITE)
    assert removed.returncode == 0, removed.stderr
    assert "user.note" not in os.listxattr(host / "plain.txt")


def in_pod_mounts(sandbox, *argv: str) -> str:
    """Run a host tool in the pod's mount namespace (where the pod's mounts are)."""
    command = ["nsenter", f"--target={sandbox.target_pid}", "--mount", "--", *argv]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def pod_tmpfs(sandbox) -> Iterator[str]:
    """A tmpfs mounted at /app/scratch in the pod's mount namespace: a filesystem the host
    cannot see there."""
    host = pod_file(sandbox, "/app/scratch")
    host.mkdir()
    try:
        in_pod_mounts(sandbox, "mount", "-t", "tmpfs", "-o", "size=3m", "scratch", str(host))
        try:
            in_pod_mounts(sandbox, "sh", "-c", f"echo on the tmpfs > {host}/note.txt")
            yield "/app/scratch"
        finally:
            in_pod_mounts(sandbox, "umount", str(host))
    finally:
        host.rmdir()


def test_stat_f_and_df_describe_the_pods_filesystem(sandbox, pod_tmpfs) -> None:
    host_path = str(pod_file(sandbox, pod_tmpfs))
    expected = in_pod_mounts(sandbox, "stat", "-f", "-c", "%T %b %S", host_path).split()
    assert expected[0] == "tmpfs"
    shown = traced(sandbox, "/usr/bin/stat", "-f", "-c", "%T %b %S", pod_tmpfs)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.decode().split() == expected
    # statvfs through a descriptor of a local copy of a pod file: the pod's filesystem too.
    script = (
        f"import os; fd = os.open('{pod_tmpfs}/note.txt', os.O_RDONLY); "
        "print(os.fstatvfs(fd).f_blocks)"
    )
    by_fd = traced(sandbox, SYSTEM_PYTHON, "-c", script)
    assert by_fd.stdout.decode().split() == [expected[1]], by_fd.stderr
    df = traced(sandbox, "/usr/bin/df", "-k", "--output=size", pod_tmpfs)
    assert df.returncode == 0, df.stderr
    assert df.stdout.decode().split()[1] == str(int(expected[1]) * int(expected[2]) // 1024)


def test_inotify_on_a_pod_path_fails_and_says_why(sandbox) -> None:
    script = (
        "import ctypes\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "fd = libc.inotify_init1(0)\n"
        "print(libc.inotify_add_watch(fd, b'/app/config.yaml', 2), ctypes.get_errno())\n"
        "print(libc.inotify_add_watch(fd, b'/tmp', 2) >= 0)\n"
    )
    out = traced(sandbox, SYSTEM_PYTHON, "-c", script)
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().split() == ["-1", str(errno.EOPNOTSUPP), "True"]
    assert "mirrord-trace: inotify cannot watch /app/config.yaml" in out.stderr.decode()
