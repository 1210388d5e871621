"""Writing: in write mode (or for read_write paths) programs change the pod's files, and the
host is untouched; in read mode (mirrord's default) writes stay on the host.

Each test works in a directory of its own under the pod's /app and removes it afterwards
(through the pod's root on the host), so the session's sandbox stays as it was built.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_fs_remote import MIRRORD_TRACE, SYSTEM_PYTHON, pod_file, probe, traced

WRITE = ("--fs-mode", "write")
_numbers = itertools.count(1)


@pytest.fixture
def pod_dir(sandbox) -> Iterator[str]:
    """A fresh directory path under the pod's /app (not created), removed afterwards."""
    path = f"/app/w{os.getpid()}-{next(_numbers)}"
    assert not os.path.exists(path)
    yield path
    shutil.rmtree(pod_file(sandbox, path), ignore_errors=True)
    assert not os.path.exists(path)  # nothing reached the host


def tree(root: Path) -> dict[str, str | None]:
    """Every path below `root` -> file content (None for directories, "-> x" for symlinks)."""
    found: dict[str, str | None] = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            value: str | None = f"-> {os.readlink(path)}"
        else:
            value = None if path.is_dir() else path.read_text()
        found[str(path.relative_to(root))] = value
    return found


@pytest.mark.parametrize("binary", ["probe-static", "probe-musl", "probe-dynamic", "probe-go"])
def test_create_append_rename_delete_land_in_the_pod(sandbox, pod_dir: str, binary: str) -> None:
    program = probe(binary)
    steps = [
        ("mkdir", pod_dir),
        ("mkdir", f"{pod_dir}/sub"),
        ("write", f"{pod_dir}/a.txt", "first"),
        ("append", f"{pod_dir}/a.txt", "+second"),
        ("write", f"{pod_dir}/sub/b.txt", "bee"),
        ("rename", f"{pod_dir}/a.txt", f"{pod_dir}/sub/c.txt"),
        ("write", f"{pod_dir}/gone.txt", "short-lived"),
        ("unlink", f"{pod_dir}/gone.txt"),
        ("mkdir", f"{pod_dir}/empty"),
        ("rmdir", f"{pod_dir}/empty"),
    ]
    for step in steps:
        out = traced(sandbox, program, *step, options=WRITE)
        assert out.returncode == 0, (step, out.stderr)
    assert tree(pod_file(sandbox, pod_dir)) == {
        "sub": None,
        "sub/b.txt": "bee",
        "sub/c.txt": "first+second",
    }
    read_back = traced(sandbox, program, "cat", f"{pod_dir}/sub/c.txt", options=WRITE)
    assert read_back.stdout == b"first+second"


def test_shell_redirections_and_mv_in_one_session(sandbox, pod_dir: str) -> None:
    # busybox sh opens the file, dup2()s it onto stdout and closes the original: the data is
    # written through a descriptor the supervisor never saw, and must still reach the pod.
    script = (
        f"mkdir {pod_dir} && echo one > {pod_dir}/log && echo two >> {pod_dir}/log && "
        f"cat {pod_dir}/log && mv {pod_dir}/log {pod_dir}/log.1 && ls {pod_dir} && "
        f"wc -c < {pod_dir}/log.1"
    )
    out = traced(sandbox, probe("busybox"), "sh", "-c", script, options=WRITE)
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().split() == ["one", "two", "log.1", "8"]
    assert tree(pod_file(sandbox, pod_dir)) == {"log.1": "one\ntwo\n"}


def test_new_files_get_the_programs_mode_and_umask(sandbox, pod_dir: str) -> None:
    script = f"""
import os
os.mkdir("{pod_dir}", 0o750)
os.umask(0o077)
os.close(os.open("{pod_dir}/private", os.O_WRONLY | os.O_CREAT, 0o666))
os.umask(0o022)
os.close(os.open("{pod_dir}/shared", os.O_WRONLY | os.O_CREAT, 0o666))
"""
    out = traced(sandbox, SYSTEM_PYTHON, "-c", script, options=WRITE)
    assert out.returncode == 0, out.stderr
    root = pod_file(sandbox, pod_dir)
    assert stat.S_IMODE(root.stat().st_mode) == 0o750 & ~0o022
    assert stat.S_IMODE((root / "private").stat().st_mode) == 0o600
    assert stat.S_IMODE((root / "shared").stat().st_mode) == 0o644


def test_errors_come_from_the_pod(sandbox, pod_dir: str) -> None:
    script = f"""
import errno, os
os.mkdir("{pod_dir}")
open("{pod_dir}/f", "w").write("x")
results = []
for attempt in (
    lambda: os.open("{pod_dir}/f", os.O_WRONLY | os.O_CREAT | os.O_EXCL),
    lambda: os.mkdir("{pod_dir}"),
    lambda: os.rmdir("{pod_dir}"),
    lambda: os.unlink("{pod_dir}/missing"),
    lambda: os.rename("{pod_dir}/f", "/tmp/outside-the-pod"),
    lambda: open("{pod_dir}/no/such/dir/f", "w"),
):
    try:
        attempt()
        results.append("ok")
    except OSError as error:
        results.append(errno.errorcode[error.errno])
print(" ".join(results))
"""
    out = traced(sandbox, SYSTEM_PYTHON, "-c", script, options=WRITE)
    assert out.returncode == 0, out.stderr
    # rename from the pod to a local path is a cross-device rename.
    assert out.stdout.decode().split() == [
        "EEXIST", "EEXIST", "ENOTEMPTY", "ENOENT", "EXDEV", "ENOENT"
    ]
    assert not os.path.exists("/tmp/outside-the-pod")


def test_fsync_writes_back_while_the_file_is_still_open(sandbox, pod_dir: str) -> None:
    script = f"""
import os, sys
os.mkdir("{pod_dir}")
f = open("{pod_dir}/journal", "w")
f.write("committed")
f.flush()
os.fsync(f.fileno())
print("synced", flush=True)
sys.stdin.readline()
f.write(" and more")
os._exit(0)  # no close, no flush of Python's buffer: only what reached the copy counts
"""
    command = [MIRRORD_TRACE, "exec", "--target", f"pid/{sandbox.target_pid}", *WRITE, "--",
               SYSTEM_PYTHON, "-c", script]
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as process:
        assert process.stdout is not None and process.stdin is not None
        try:
            assert process.stdout.readline() == b"synced\n"
            assert pod_file(sandbox, f"{pod_dir}/journal").read_text() == "committed"
            process.stdin.write(b"go\n")
            process.stdin.close()
            assert process.wait(timeout=60) == 0
        finally:
            process.kill()
    assert pod_file(sandbox, f"{pod_dir}/journal").read_text() == "committed"


def test_data_written_without_close_reaches_the_pod_when_the_process_exits(
    sandbox, pod_dir: str
) -> None:
    script = f"""
import os
os.mkdir("{pod_dir}")
fd = os.open("{pod_dir}/out", os.O_WRONLY | os.O_CREAT, 0o644)
os.write(fd, b"written, never closed")
os._exit(0)
"""
    out = traced(sandbox, SYSTEM_PYTHON, "-c", script, options=WRITE)
    assert out.returncode == 0, out.stderr
    assert pod_file(sandbox, f"{pod_dir}/out").read_text() == "written, never closed"


def test_overwrite_in_place_and_truncate(sandbox, pod_dir: str) -> None:
    script = f"""
import os
os.mkdir("{pod_dir}")
open("{pod_dir}/f", "w").write("0123456789")
with open("{pod_dir}/f", "r+") as f:  # O_RDWR, no O_TRUNC: the pod's content comes first
    f.seek(2)
    f.write("ab")
print(open("{pod_dir}/f").read())
os.truncate("{pod_dir}/f", 6)
print(os.stat("{pod_dir}/f").st_size)
with open("{pod_dir}/g", "w") as g:
    g.write("abcdefgh")
    g.flush()
    g.truncate(3)  # ftruncate on the open file
"""
    out = traced(sandbox, SYSTEM_PYTHON, "-c", script, options=WRITE)
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().split() == ["01ab456789", "6"]
    assert pod_file(sandbox, f"{pod_dir}/f").read_text() == "01ab45"
    assert pod_file(sandbox, f"{pod_dir}/g").read_text() == "abc"


def test_large_file_written_whole(sandbox, pod_dir: str) -> None:
    size = 3 * 1024 * 1024 + 12345  # several write-back chunks and a partial last one
    script = f"""
import os
os.mkdir("{pod_dir}")
with open("{pod_dir}/big", "wb") as f:
    f.write(bytes(range(256)) * ({size} // 256) + b"x" * ({size} % 256))
"""
    out = traced(sandbox, SYSTEM_PYTHON, "-c", script, options=WRITE)
    assert out.returncode == 0, out.stderr
    data = pod_file(sandbox, f"{pod_dir}/big").read_bytes()
    assert len(data) == size
    assert data == bytes(range(256)) * (size // 256) + b"x" * (size % 256)


def test_read_mode_writes_stay_on_the_host(sandbox, tmp_path: Path) -> None:
    # mirrord's read mode: "reads from remote, writes locally". /var/log exists in the pod and
    # on the host and no default rule covers it, so the fs mode decides.
    name = f"/var/log/mirrord-trace-fs-test-{os.getpid()}.txt"
    try:
        written = traced(sandbox, probe("probe-static"), "write", name, "host-side")
        assert written.returncode == 0, written.stderr
        assert Path(name).read_text() == "host-side"
        assert not pod_file(sandbox, name).exists()
        # Reading the same path in read mode asks the pod, which has no such file.
        reread = traced(sandbox, probe("probe-static"), "cat", name)
        assert reread.returncode == 2
        # mkdir, unlink, rename in read mode are local too.
        removed = traced(sandbox, probe("probe-go"), "unlink", name)
        assert removed.returncode == 0
        assert not Path(name).exists()
    finally:
        Path(name).unlink(missing_ok=True)


def test_read_write_override_in_read_mode(sandbox, pod_dir: str, tmp_path: Path) -> None:
    config = {"feature": {"fs": {"mode": "read", "read_write": [f"^{pod_dir}"]}}}
    made = traced(sandbox, probe("probe-go"), "mkdir", pod_dir, config=config, tmp_path=tmp_path)
    assert made.returncode == 0, made.stderr
    out = traced(sandbox, probe("probe-static"), "write", f"{pod_dir}/f", "override",
                 config=config, tmp_path=tmp_path)
    assert out.returncode == 0, out.stderr
    assert pod_file(sandbox, f"{pod_dir}/f").read_text() == "override"
    # Other pod paths stay read-only: the write goes to the host, which has no /app.
    elsewhere = traced(sandbox, probe("probe-static"), "write", "/app/elsewhere", "x",
                       config=config, tmp_path=tmp_path)
    assert elsewhere.returncode == 2
    assert not pod_file(sandbox, "/app/elsewhere").exists()


def test_copy_tree_touch_chmod_chown_and_links_in_the_pod(sandbox, pod_dir: str) -> None:
    script = (
        f"mkdir -p {pod_dir}/deep/er && cp -r /app/data {pod_dir}/deep/er/ && "
        f"touch -d '2001-02-03 04:05:06' {pod_dir}/stamp && chmod 640 {pod_dir}/stamp && "
        f"chown 123:456 {pod_dir}/stamp && ln -s stamp {pod_dir}/soft && "
        f"ln {pod_dir}/stamp {pod_dir}/hard && chown -h 7:8 {pod_dir}/soft"
    )
    out = traced(sandbox, probe("busybox"), "sh", "-c", script, options=WRITE)
    assert out.returncode == 0, out.stderr
    root = pod_file(sandbox, pod_dir)
    original = pod_file(sandbox, "/app/data")
    copied = root / "deep/er/data"
    assert sorted(p.relative_to(copied) for p in copied.rglob("*")) == sorted(
        p.relative_to(original) for p in original.rglob("*")
    )
    assert os.readlink(copied / "latest") == os.readlink(original / "latest")
    info = (root / "stamp").stat()
    expected_mtime = subprocess.run(
        ["date", "-d", "2001-02-03 04:05:06", "+%s"], capture_output=True, check=True
    ).stdout
    assert int(info.st_mtime) == int(expected_mtime)
    assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o640, 123, 456)
    assert os.readlink(root / "soft") == "stamp"
    assert (root / "soft").lstat().st_uid == 7  # chown -h: the link itself
    assert (root / "hard").stat().st_ino == info.st_ino and info.st_nlink == 2


def test_python_makedirs_walk_and_rmtree_through_dirfds(sandbox, pod_dir: str) -> None:
    # shutil.rmtree works through directory descriptors (openat, unlinkat relative to them)
    # and refuses to go on when fstat of what it opened differs from lstat of the path.
    script = f"""
import json, os, shutil
os.makedirs("{pod_dir}/a/b/c")
for directory in ("a", "a/b", "a/b/c"):
    for number in range(3):
        open(f"{pod_dir}/{{directory}}/f{{number}}", "w").write(directory)
os.symlink("a/b", "{pod_dir}/link")
walked = sorted((root, sorted(files)) for root, _, files in os.walk("{pod_dir}"))
assert shutil.rmtree.avoids_symlink_attacks
shutil.rmtree("{pod_dir}/a")
print(json.dumps({{"walked": walked, "left": os.listdir("{pod_dir}")}}))
"""
    out = traced(sandbox, SYSTEM_PYTHON, "-c", script, options=WRITE)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["walked"] == [
        [pod_dir, []],
        [f"{pod_dir}/a", ["f0", "f1", "f2"]],
        [f"{pod_dir}/a/b", ["f0", "f1", "f2"]],
        [f"{pod_dir}/a/b/c", ["f0", "f1", "f2"]],
    ]
    assert result["left"] == ["link"]
    assert tree(pod_file(sandbox, pod_dir)) == {"link": "-> a/b"}
