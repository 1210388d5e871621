"""Write mode writes through in ranges (issue #20, item 8): appending to a large remote file
moves what was appended (and at most a page), not the file; the target's bytes come out right
however the copy is then shared, truncated or written back.

The session's own state (RemoteFs: cache, writers) runs against a real agent for a chroot-style
target; the agent's `stats` request says how many file bytes it read and wrote for the session.
The end-to-end test runs `sh -c '... >> file'` through the CLI against the sandbox pod.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from mirrord_trace.agent_client import AgentClient
from mirrord_trace.handlers.fs_remote import RemoteFs
from mirrord_trace.local_target import LocalAgent
from tests.test_agent_support import Target, running_target
from tests.test_fs_remote import MIRRORD_TRACE, SYSTEM_PYTHON, pod_file

MiB = 1024 * 1024
SIZE = 64 * MiB + 1234  # not a multiple of a page: an append starts mid-page
APPEND = os.O_WRONLY | os.O_APPEND


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    with running_target() as running:
        yield running


@pytest.fixture
def session(target: Target) -> Iterator[tuple[AgentClient, RemoteFs, Path]]:
    """A session, its remote file state, and a large file in the target (host path)."""
    big = target.root / "data" / f"large-{os.getpid()}.bin"
    with open(big, "wb") as out:
        out.write(os.urandom(SIZE))
    with LocalAgent(target.pid) as client:
        remote = RemoteFs(client)
        try:
            yield client, remote, big
        finally:
            remote.close()
            big.unlink(missing_ok=True)


def moved(client: AgentClient) -> dict[str, int]:
    return client.request("stats")["bytes"]


def test_appending_to_a_large_file_moves_only_the_append(session) -> None:
    client, remote, big = session
    original = big.read_bytes()
    lines = b"one\ntwo\nthree\n"
    local = remote.writers.open(f"/data/{big.name}", APPEND, 0o644)
    assert os.stat(local).st_size == SIZE  # the program sees the file's size
    fd = os.open(local, APPEND)
    os.write(fd, lines)
    os.close(fd)
    remote.writers.close()  # write-back, as when the program's descriptor is closed
    assert big.read_bytes() == original + lines
    counted = moved(client)
    page = os.sysconf("SC_PAGE_SIZE")
    # In: the page the append starts in. Out: that page's tail and the lines.
    assert counted.get("read", 0) <= page
    assert counted["written"] <= page + len(lines)


def test_an_append_only_copy_is_filled_in_before_anything_can_read_it(session) -> None:
    _client, remote, big = session
    original = big.read_bytes()
    path = f"/data/{big.name}"
    local = remote.writers.open(path, APPEND, 0o644)
    fd = os.open(local, APPEND)
    os.write(fd, b"tail")
    # A second open that may read shares the copy: it must see the target's bytes.
    shared = remote.writers.shared_copy(path)
    assert shared == local
    with open(shared, "rb") as reader:
        assert reader.read() == original + b"tail"
    os.close(fd)
    remote.writers.close()
    assert big.read_bytes() == original + b"tail"


def test_shrinking_an_append_only_copy_then_appending_keeps_the_targets_bytes(session) -> None:
    _client, remote, big = session
    original = big.read_bytes()
    local = remote.writers.open(f"/data/{big.name}", APPEND, 0o644)
    cut = SIZE // 2 + 17  # mid-page, far below the part that was copied in
    remote.writers.before_resize(local)  # what the ftruncate trap does first
    os.truncate(local, cut)
    fd = os.open(local, APPEND)
    os.write(fd, b"after the cut")
    os.close(fd)
    remote.writers.close()
    assert big.read_bytes() == original[:cut] + b"after the cut"


def test_a_whole_copy_is_written_back_by_its_data_extents(session) -> None:
    _client, remote, big = session
    original = big.read_bytes()
    local = remote.writers.open(f"/data/{big.name}", os.O_RDWR, 0o644)
    fd = os.open(local, os.O_RDWR)
    os.pwrite(fd, b"middle", SIZE // 3)
    os.close(fd)
    remote.writers.close()
    expected = bytearray(original)
    expected[SIZE // 3 : SIZE // 3 + 6] = b"middle"
    assert hashlib.sha256(big.read_bytes()).digest() == hashlib.sha256(expected).digest()


def test_shell_append_through_the_cli_lands_in_the_pod(sandbox) -> None:
    path = f"/app/append-{os.getpid()}.log"
    host = pod_file(sandbox, path)
    content = os.urandom(3 * MiB + 5)
    host.write_bytes(content)
    try:
        result = subprocess.run(
            [MIRRORD_TRACE, "exec", "--target", f"pid/{sandbox.target_pid}", "--fs-mode",
             "write", "--", "sh", "-c", f"echo first >> {path}; printf 'second\\n' >> {path}"],
            capture_output=True,
            timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert host.read_bytes() == content + b"first\nsecond\n"
    finally:
        host.unlink(missing_ok=True)
    assert not os.path.exists(path)


def test_truncating_a_file_open_for_appending_keeps_the_pods_bytes(sandbox) -> None:
    """ftruncate of an append-only copy (trapped): the copy is filled in first, so what the
    pod keeps below the cut is its own content, not the copy's holes."""
    path = f"/app/cut-{os.getpid()}.log"
    host = pod_file(sandbox, path)
    content = os.urandom(2 * MiB + 77)
    host.write_bytes(content)
    script = (
        f"f = open({path!r}, 'ab'); f.truncate({MiB + 5}); f.write(b'tail'); f.close()"
    )
    try:
        result = subprocess.run(
            [MIRRORD_TRACE, "exec", "--target", f"pid/{sandbox.target_pid}", "--fs-mode",
             "write", "--", SYSTEM_PYTHON, "-c", script],
            capture_output=True,
            timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert host.read_bytes() == content[: MiB + 5] + b"tail"
    finally:
        host.unlink(missing_ok=True)
