"""Confinement of the agent's changing operations (issue #20, item 1): whatever symlinks,
`..` and loops the target's files contain, no link, rename, symlink, unlink, mkdir, chmod,
chown, utimens, truncate, extended attribute or write through the agent reads or changes a byte
outside the target's root.

Two kinds of target: a chroot-style process sharing the agent's mount namespace (the reported
escape: `ln -L` of a symlink to a host file), and the sandbox pod in its own mount namespace.
A canary directory on the host, next to the target's root (where `..` from the root would
land) and named by absolute links, must be exactly as it was after every example.
"""

from __future__ import annotations

import itertools
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mirrord_trace.agent_client import AgentClient, RemoteError
from mirrord_trace.local_target import LocalAgent
from tests.test_agent_support import running_target
from tests.test_fs_remote import MIRRORD_TRACE

CANARY = b"CANARY-HOST-ONLY-9d2e"
XATTR = b"user.canary"
NAMES = ("a", "b", "sub", "sub/a", "sub/b", "sub/c")
_examples = itertools.count(1)


@dataclass
class Confined:
    client: AgentClient
    root: Path  # the target's "/" as seen from the host
    canary_dir: Path  # on the host, outside the root


def _snapshot(directory: Path) -> dict[str, tuple]:
    """Everything a write could change about the canary directory and what is in it (not
    atime: taking the snapshot reads the files; reads are caught by their content)."""
    found: dict[str, tuple] = {}
    for path in [directory, *sorted(directory.rglob("*"))]:
        info = path.lstat()
        content = path.read_bytes() if stat.S_ISREG(info.st_mode) else b""
        attributes = sorted(
            (name, os.getxattr(path, name, follow_symlinks=False))
            for name in os.listxattr(path, follow_symlinks=False)
        ) if not stat.S_ISLNK(info.st_mode) else []
        found[str(path)] = (
            info.st_mode, info.st_uid, info.st_gid, info.st_nlink, info.st_size,
            info.st_mtime_ns, info.st_ctime_ns, content, attributes,
        )  # fmt: skip
    return found


def _plant_canary(directory: Path) -> None:
    directory.mkdir(mode=0o700)
    (directory / "canary").write_bytes(CANARY)
    os.chmod(directory / "canary", 0o600)
    # An attribute holding the secret too: reading it through the agent would be a leak, and
    # removing it a change (both seen by the snapshot and the content check).
    os.setxattr(directory / "canary", XATTR, CANARY)
    (directory / "inner").mkdir(mode=0o700)


@pytest.fixture(scope="module", params=["chroot", "mount-namespace"])
def confined(request: pytest.FixtureRequest) -> Iterator[Confined]:
    if request.param == "chroot":
        with running_target() as target, LocalAgent(target.pid) as client:
            canary_dir = target.base / "canary-dir"
            _plant_canary(canary_dir)
            yield Confined(client, target.root, canary_dir)
        return
    sandbox = request.getfixturevalue("sandbox")
    # Next to the pod's root, where `..` from the root would land.
    canary_dir = sandbox.root.parent / f"canary-{os.getpid()}"
    _plant_canary(canary_dir)
    try:
        with LocalAgent(sandbox.target_pid) as client:
            yield Confined(client, sandbox.root, canary_dir)
    finally:
        shutil.rmtree(canary_dir, ignore_errors=True)


def ways_out(canary_dir: Path) -> st.SearchStrategy[str]:
    """Link targets that lead to the canary when resolved from the host's root."""
    escape = st.integers(1, 4).map(lambda depth: "../" * depth + canary_dir.name)
    return st.one_of(
        st.sampled_from([str(canary_dir / "canary"), str(canary_dir), str(canary_dir / "inner")]),
        escape.map(lambda path: path + "/canary"),
        escape,
    )


def link_targets(canary_dir: Path) -> st.SearchStrategy[str]:
    segment = st.sampled_from(["..", ".", *NAMES, canary_dir.name, "canary", "inner"])
    relative = st.lists(segment, min_size=1, max_size=5).map("/".join).filter(bool)
    return st.one_of(
        ways_out(canary_dir),
        relative,
        relative.map(lambda path: "/" + path),
        st.sampled_from(["/", "..", "../..", "a", "sub/../a", "b"]),  # loops among others
    )


def tree(canary_dir: Path) -> st.SearchStrategy[dict[str, tuple[str, str]]]:
    """Every name of the maze: mostly links (half of them ways out), some files and dirs."""
    entry = st.one_of(
        st.tuples(st.just("link"), ways_out(canary_dir)),
        st.tuples(st.just("link"), link_targets(canary_dir)),
        st.tuples(st.just("file"), st.just("inside")),
        st.tuples(st.just("dir"), st.just("")),
    )
    return st.fixed_dictionaries({name: entry for name in NAMES})


def build(maze: Path, entries: dict[str, tuple[str, str]]) -> None:
    shutil.rmtree(maze, ignore_errors=True)
    maze.mkdir(parents=True)
    for relative, (kind, value) in sorted(entries.items()):
        path = maze / relative
        if path.parent.is_symlink() or not path.parent.is_dir() or path.exists():
            continue
        if kind == "link":
            path.symlink_to(value)
        elif kind == "file":
            path.write_text(value)
        else:
            path.mkdir()


def operations(maze: str, canary_dir: Path) -> st.SearchStrategy[list[tuple]]:
    names = st.lists(st.sampled_from([*NAMES, "..", ".", "new", "canary"]), min_size=1,
                     max_size=4)  # fmt: skip
    # Most paths name an entry of the tree itself (where the links are), some go further.
    entry = st.sampled_from(NAMES)
    path = st.one_of(entry, entry, names.map("/".join)).map(lambda tail: f"{maze}/{tail}")
    fresh = st.sampled_from(["new", "sub/new"]).map(lambda name: f"{maze}/{name}")
    follow = st.booleans()
    one = st.one_of(
        st.tuples(st.just("link"), path, st.one_of(fresh, path), follow),
        st.tuples(st.just("symlink"), link_targets(canary_dir), path),
        st.tuples(st.just("rename"), path, st.one_of(fresh, path)),
        st.tuples(st.just("unlink"), path, st.booleans()),
        st.tuples(st.just("mkdir"), st.one_of(fresh, path)),
        st.tuples(st.just("chmod"), path, follow),
        st.tuples(st.just("chown"), path, follow),
        st.tuples(st.just("utimens"), path, follow),
        st.tuples(st.just("truncate"), path),
        st.tuples(st.just("setxattr"), path, follow),
        st.tuples(st.just("getxattr"), path, follow),
        st.tuples(st.just("removexattr"), path, follow),
        st.tuples(st.just("write"), st.one_of(fresh, path)),
        st.tuples(st.just("read"), path),
    )
    return st.lists(one, min_size=1, max_size=8)


def apply(client: AgentClient, operation: tuple) -> bytes:
    """Run one operation through the agent; what came back (file contents read)."""
    kind, *args = operation
    if kind == "link":
        client.request("fs.link", old=args[0], new=args[1], follow=args[2])
    elif kind == "symlink":
        client.request("fs.symlink", target=args[0], path=args[1])
    elif kind == "rename":
        client.request("fs.rename", old=args[0], new=args[1])
    elif kind == "unlink":
        client.request("fs.unlink", path=args[0], directory=args[1])
    elif kind == "mkdir":
        client.request("fs.mkdir", path=args[0], mode=0o777)
    elif kind == "chmod":
        client.request("fs.chmod", path=args[0], mode=0o666, follow=args[1])
    elif kind == "chown":
        client.request("fs.chown", path=args[0], uid=4242, gid=4242, follow=args[1])
    elif kind == "utimens":
        client.request("fs.utimens", path=args[0], times=[[1, 0], [1, 0]], follow=args[1])
    elif kind == "truncate":
        client.request("fs.truncate", path=args[0], length=0)
    elif kind == "setxattr":
        client.request("fs.setxattr", path=args[0], name=b"user.pwned", value=b"1",
                       follow=args[1])  # fmt: skip
    elif kind == "getxattr":
        return client.request("fs.getxattr", path=args[0], name=XATTR, follow=args[1])["value"]
    elif kind == "removexattr":
        client.request("fs.removexattr", path=args[0], name=XATTR, follow=args[1])
    elif kind == "write":
        reply = client.request("fs.open_write", path=args[0], flags=os.O_CREAT, mode=0o644)
        client.request("fs.pwrite", handle=reply["handle"], offset=0, data=b"PWNED")
        client.request("fs.close", handle=reply["handle"])
        return reply["content"]
    else:
        reply = client.request("fs.open_read", path=args[0])
        if "handle" in reply:
            client.request("fs.close", handle=reply["handle"])
        return reply.get("content", b"")
    return b""


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_no_operation_changes_or_reads_anything_outside_the_root(
    data: st.DataObject, confined: Confined
) -> None:
    maze = f"/escape-maze-{os.getpid()}-{next(_examples)}"
    before = _snapshot(confined.canary_dir)
    try:
        build(confined.root / maze.lstrip("/"), data.draw(tree(confined.canary_dir)))
        for operation in data.draw(operations(maze, confined.canary_dir)):
            try:
                seen = apply(confined.client, operation)
            except RemoteError:
                continue
            assert CANARY not in seen, operation
        assert _snapshot(confined.canary_dir) == before
    finally:
        shutil.rmtree(confined.root / maze.lstrip("/"), ignore_errors=True)


@pytest.fixture
def canary() -> Iterator[Path]:
    """A root-only host file, where the reported escape's symlink points."""
    directory = Path(tempfile.mkdtemp(prefix="mirrord-trace-canary-", dir="/var/tmp"))
    path = directory / "canary"
    path.write_bytes(CANARY)
    os.chmod(path, 0o600)
    try:
        yield path
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_reported_escape_ln_L_to_a_host_file_stays_in_the_root(canary: Path) -> None:
    """The reproduction from the issue, through the CLI: a symlink to a host file, `ln -L` of
    it, and a write to the new name must not touch the host file."""
    before = _snapshot(canary.parent)
    with running_target() as target:
        script = f"ln -s {canary} /data/s; ln -L /data/s /data/h; echo PWNED > /data/h"
        result = subprocess.run(
            [MIRRORD_TRACE, "exec", "--target", f"pid/{target.pid}", "--fs-mode", "write",
             "--", "sh", "-c", script],
            capture_output=True,
            timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        # ln -L found nothing at /var/tmp/... inside the target; the write made a new file.
        assert b"No such file" in result.stderr
        assert os.readlink(target.root / "data/s") == str(canary)
        assert (target.root / "data/h").read_bytes() == b"PWNED\n"
    assert _snapshot(canary.parent) == before
