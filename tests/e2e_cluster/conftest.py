"""The real cluster for the end-to-end tests: one per session.

`make cluster` brings it up (building what is missing); at the end of the session
`make cluster-down` takes it down again, unless it was already running when the session began
(then it is left running, as found). The cleanup test runs last and takes the cluster down
itself to compare the host before and after.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import layout, processes
from tests.e2e_cluster.workloads import Kube


def _make(target: str) -> None:
    result = subprocess.run(["make", "-s", target], cwd=layout.REPO, capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"make {target} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


def cluster_was_running() -> bool:
    return processes.running("kube-apiserver") and layout.KUBECONFIG.exists()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The teardown test goes last: every other cluster test needs the cluster up."""
    items.sort(key=lambda item: item.get_closest_marker("cluster_teardown") is not None)


@pytest.fixture(scope="session")
def cluster_session() -> Iterator[dict]:
    state = {"was_running": cluster_was_running()}
    _make("cluster")
    yield state
    if not state["was_running"]:
        _make("cluster-down")


@pytest.fixture(scope="session")
def kubeconfig(cluster_session: dict) -> Path:
    return layout.KUBECONFIG


@pytest.fixture(scope="session")
def kube(kubeconfig: Path) -> Kube:
    return Kube(kubeconfig)


@pytest.fixture(scope="session")
def cli_env(kubeconfig: Path) -> dict[str, str]:
    """The environment mirrord-trace runs in: the cluster's kubeconfig, nothing else."""
    return {**os.environ, "KUBECONFIG": str(kubeconfig)}
