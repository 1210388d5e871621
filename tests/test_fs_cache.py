"""The local side's cache of remote files: skeletons, mapping back, clean-up, shared descriptors.

Real directories, real device nodes, a real agent (for listing pages, targeting this process),
and a real supervisor killed with SIGKILL for the clean-up of abandoned caches.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from agent.files.reads import stat_dict
from mirrord_trace.fs.agent_descriptors import SHARE_ENV, AgentDescriptors
from mirrord_trace.fs.cache import FAST_BASES, SESSION_PREFIX, LocalCache, remove_abandoned
from mirrord_trace.local_target import LocalAgent
from mirrord_trace.protocol.requests import DT_CHR, DT_DIR, DT_FIFO, DT_LNK, DT_REG, DT_SOCK
from tests.test_agent_lost import agent_of
from tests.test_fs_remote import MIRRORD_TRACE, SYSTEM_PYTHON

ENTRY_TYPES = {
    "file": (DT_REG, stat.S_ISREG),
    "dir": (DT_DIR, stat.S_ISDIR),
    "link": (DT_LNK, stat.S_ISLNK),
    "fifo": (DT_FIFO, stat.S_ISFIFO),
    "sock": (DT_SOCK, stat.S_ISSOCK),
    "chr": (DT_CHR, stat.S_ISCHR),
}


def cache_in(tmp_path: Path) -> LocalCache:
    return LocalCache(fast_bases=[tmp_path / "fast"], large_bases=[tmp_path / "large"])


@pytest.fixture
def bases(tmp_path: Path) -> Path:
    (tmp_path / "fast").mkdir()
    (tmp_path / "large").mkdir()
    return tmp_path


def test_skeleton_has_the_remote_entries_types_and_metadata(bases: Path) -> None:
    cache = cache_in(bases)
    try:
        remote_dir = bases / "remote"
        remote_dir.mkdir(mode=0o750)
        os.utime(remote_dir, ns=(1_500_000_000_000_000_000, 1_600_000_000_000_000_000))
        entries = [{"name": name, "type": dtype, "ino": 1} for name, (dtype, _) in
                   ENTRY_TYPES.items()]
        skeleton = cache.new_skeleton("/app", stat_dict(os.stat(remote_dir)), entries)
        found = {entry.name: entry for entry in os.scandir(skeleton)}
        assert set(found) == set(ENTRY_TYPES)
        for name, (_, is_type) in ENTRY_TYPES.items():
            assert is_type(found[name].stat(follow_symlinks=False).st_mode), name
        info = os.stat(skeleton)
        assert stat.S_IMODE(info.st_mode) == 0o750
        assert info.st_mtime_ns == 1_600_000_000_000_000_000
    finally:
        cache.close()


def test_paths_inside_the_cache_map_back_to_remote_paths(bases: Path) -> None:
    cache = cache_in(bases)
    try:
        skeleton = cache.new_skeleton("/app/data", stat_dict(os.stat(bases)), [])
        copy, fd = cache.new_file("/app/config.yaml")
        os.close(fd)
        assert cache.remote_path_of(skeleton) == "/app/data"
        assert cache.remote_path_of(f"{skeleton}/items/x") == "/app/data/items/x"
        assert cache.remote_path_of(copy) == "/app/config.yaml"
        assert cache.remote_path_of(str(bases)) is None
        assert cache.remote_path_of("/app/data") is None
        large, fd = cache.new_file("/app/blob.bin", large=True)
        os.close(fd)
        assert large.startswith(str(bases / "large"))
        assert cache.remote_path_of(large) == "/app/blob.bin"
    finally:
        cache.close()
    assert list((bases / "fast").iterdir()) == [] and list((bases / "large").iterdir()) == []


def test_abandoned_caches_are_removed_and_live_ones_kept(bases: Path) -> None:
    finished = subprocess.Popen(["true"])
    finished.wait()
    dead = bases / "fast" / f"{SESSION_PREFIX}{finished.pid}-abc"
    alive = bases / "fast" / f"{SESSION_PREFIX}{os.getpid()}-def"
    unrelated = bases / "fast" / "something-else"
    for directory in (dead, alive, unrelated):
        directory.mkdir()
        (directory / "file").write_text("x")
    assert remove_abandoned(bases / "fast") == [str(dead)]
    assert not dead.exists() and alive.exists() and unrelated.exists()


def test_a_shared_descriptor_must_be_the_described_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(SHARE_ENV, raising=False)
    wanted, other = tmp_path / "wanted", tmp_path / "other"
    wanted.write_text("the file")
    other.write_text("another file")
    fd = os.open(wanted, os.O_RDONLY)
    try:
        descriptors = AgentDescriptors(os.getpid())
        duplicate = descriptors.take(fd, stat_dict(os.stat(wanted)))
        assert duplicate is not None and duplicate != fd
        assert os.read(duplicate, 100) == b"the file"
        os.close(duplicate)
        assert descriptors.take(fd, stat_dict(os.stat(other))) is None
        assert not descriptors.enabled  # from now on the session streams
        descriptors.close()
        monkeypatch.setenv(SHARE_ENV, "0")
        assert not AgentDescriptors(os.getpid()).enabled
    finally:
        os.close(fd)


def test_listing_pages_add_up_to_the_whole_directory(tmp_path: Path) -> None:
    for number in range(23):
        (tmp_path / f"entry-{number:02d}").write_text("")
    with LocalAgent(os.getpid()) as client:
        whole = client.request("fs.listdir", path=str(tmp_path))
        assert not whole["more"]
        names: list[str] = []
        offset, more = 0, True
        while more:
            page = client.request("fs.listdir", path=str(tmp_path), offset=offset, limit=5)
            names += [entry["name"] for entry in page["entries"]]
            offset = len([n for n in names if n not in (".", "..")])
            more = page["more"]
    assert sorted(names) == sorted(entry["name"] for entry in whole["entries"])


def _session_holding_a_pod_file(sandbox) -> subprocess.Popen:
    """A session whose program holds /app/config.yaml open (so its copy exists) and waits."""
    script = "import sys; f = open('/app/config.yaml'); print('open', flush=True); sys.stdin.read()"
    command = [MIRRORD_TRACE, "exec", "--target", f"pid/{sandbox.target_pid}", "--",
               SYSTEM_PYTHON, "-c", script]
    return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def test_a_killed_sessions_copies_are_removed_without_waiting_for_another_session(
    sandbox,
) -> None:
    if not FAST_BASES[0].is_dir():
        pytest.fail(f"{FAST_BASES[0]} is missing: the cache would live elsewhere")
    # The supervisor is killed outright: none of its clean-up code runs.
    with _session_holding_a_pod_file(sandbox) as process:
        assert process.stdout is not None
        agent = agent_of(process.pid)
        try:
            assert process.stdout.readline() == b"open\n"
            left = set(Path(FAST_BASES[0]).glob(f"{SESSION_PREFIX}{process.pid}-*"))
            assert len(left) == 1
            assert any(path.is_file() for path in next(iter(left)).iterdir())
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
        finally:
            process.kill()
            os.kill(agent, signal.SIGKILL)  # its parent died without stopping it
    deadline = time.monotonic() + 10
    while any(path.exists() for path in left):
        assert time.monotonic() < deadline, f"the killed session's copies stayed: {left}"
        time.sleep(0.05)


def test_copies_of_pod_files_are_private_to_the_invoking_user(sandbox) -> None:
    # The copy keeps the pod file's mode (0644) and owner for fstat; another local user must
    # still not be able to read it.
    with _session_holding_a_pod_file(sandbox) as process:
        assert process.stdout is not None
        try:
            assert process.stdout.readline() == b"open\n"
            (root,) = Path(FAST_BASES[0]).glob(f"{SESSION_PREFIX}{process.pid}-*")
            copies = [path for path in root.iterdir() if path.is_file()]
            assert copies and stat.S_IMODE(os.stat(copies[0]).st_mode) & 0o004
            reader = subprocess.run(
                [SYSTEM_PYTHON, "-c", f"open({str(copies[0])!r}).read()"],
                user=65534, group=65534, extra_groups=[], capture_output=True, timeout=30,
            )
            assert reader.returncode != 0
            assert b"PermissionError" in reader.stderr
        finally:
            process.stdin.close()
            process.wait(timeout=30)
    assert not root.exists()


def test_writers_survive_an_inotify_queue_overflow(bases: Path, tmp_path: Path) -> None:
    # A second descriptor of a copy is opened while the event queue is full: its IN_OPEN is
    # lost. When the first descriptor then closes, the copy must not be taken for closed, or
    # what the second one writes never reaches the target.
    from mirrord_trace.fs.remote_files import RemoteFiles
    from mirrord_trace.fs.writers import Writers

    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    target, other = tmp_path / "target", tmp_path / "other"
    with LocalAgent(os.getpid()) as client:  # this process is the target: its root is "/"
        cache = cache_in(bases)
        writers = Writers(client, cache, RemoteFiles(client, cache))
        try:
            copy = writers.open(str(target), os.O_WRONLY | os.O_CREAT, 0o644)
            other_copy = writers.open(str(other), os.O_WRONLY | os.O_CREAT, 0o644)
            first = os.open(copy, os.O_WRONLY | os.O_APPEND)
            noise = os.open(other_copy, os.O_WRONLY)
            writers.poll()
            # Alternating writes queue one IN_MODIFY each (identical events merge only when
            # consecutive): more than an inotify instance holds.
            for _ in range(limit // 2 + 100):
                os.write(first, b"a")
                os.pwrite(noise, b"n", 0)
            second = os.open(copy, os.O_WRONLY | os.O_APPEND)  # its IN_OPEN is dropped
            writers.poll()
            os.close(first)
            writers.poll()  # the first close arrives
            os.write(second, b"-tail")
            os.close(second)
            os.close(noise)
            writers.poll()
            assert target.read_bytes().endswith(b"-tail")
        finally:
            writers.close()
            cache.close()
    assert target.read_bytes() == b"a" * (limit // 2 + 100) + b"-tail"
    assert other.read_bytes() == b"n"
