"""Confinement: whatever symlinks a target's files contain, the agent never reads outside the
target's root. Random trees of links are read both through the agent and by a process
chrooted into the same root; the answers must agree and never contain the host's secret."""

from __future__ import annotations

import errno
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mirrord_trace.agent_client import AgentClient, RemoteError
from mirrord_trace.local_target import LocalAgent
from tests.test_agent_support import SECRET, ChrootOracle, Target, running_target

NAMES = ("a", "b", "c", "sub")


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    with running_target() as running:
        yield running


@pytest.fixture(scope="module")
def client(target: Target) -> Iterator[AgentClient]:
    with LocalAgent(target.pid) as connected:
        yield connected


@pytest.fixture(scope="module")
def oracle(target: Target) -> Iterator[ChrootOracle]:
    chrooted = ChrootOracle(target.root)
    yield chrooted
    chrooted.close()


def link_targets(host_secret: str) -> st.SearchStrategy[str]:
    segment = st.sampled_from(
        ["..", ".", "", *NAMES, "maze", "secret.txt", "root", "data", "small.txt", "proc"]
    )
    # symlink(2) refuses an empty target; every other string is a valid link.
    relative = st.lists(segment, min_size=1, max_size=6).map("/".join).filter(bool)
    return st.one_of(
        relative,
        relative.map(lambda path: "/" + path),
        st.just(host_secret),  # the secret's real path on the host
        st.integers(1, 8).map(lambda depth: "../" * depth + "secret.txt"),
    )


def tree_entries(host_secret: str) -> st.SearchStrategy[dict[str, tuple[str, str]]]:
    entry = st.one_of(
        st.tuples(st.just("link"), link_targets(host_secret)),
        st.tuples(st.just("file"), st.sampled_from(["x", "inside", "another file"])),
        st.tuples(st.just("dir"), st.just("")),
    )
    paths = st.sampled_from([name for name in NAMES] + [f"sub/{name}" for name in NAMES])
    return st.dictionaries(paths, entry, max_size=8)


def build_maze(root: Path, entries: dict[str, tuple[str, str]]) -> None:
    maze = root / "maze"
    shutil.rmtree(maze, ignore_errors=True)
    (maze / "sub").mkdir(parents=True)
    for relative, (kind, value) in sorted(entries.items()):
        path = maze / relative
        if relative == "sub" or path.parent.is_symlink() or not path.parent.is_dir():
            continue
        if kind == "link":
            path.symlink_to(value)
        elif kind == "file":
            path.write_text(value)
        else:
            path.mkdir()


def agent_read(client: AgentClient, path: str) -> bytes | int:
    try:
        reply = client.request("fs.open_read", path=path)
    except RemoteError as error:
        return error.errno
    return reply.get("content", errno.EISDIR)


queries = st.lists(st.sampled_from([*NAMES, "..", "."]), min_size=1, max_size=4).map(
    lambda parts: "/maze/" + "/".join(parts)
)


@given(data=st.data())
def test_no_path_reads_outside_the_root(
    data: st.DataObject, client: AgentClient, oracle: ChrootOracle, target: Target
) -> None:
    host_secret = str(target.base / "secret.txt")
    build_maze(target.root, data.draw(tree_entries(host_secret)))
    for path in data.draw(st.lists(queries, min_size=1, max_size=6)):
        through_agent = agent_read(client, path)
        if isinstance(through_agent, bytes):
            assert SECRET not in through_agent
        assert through_agent == oracle.read(path), path
        try:
            names = [e["name"] for e in client.request("fs.listdir", path=path)["entries"]]
        except RemoteError:
            continue
        assert "secret.txt" not in names and "root" not in names
