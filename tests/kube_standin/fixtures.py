"""pytest fixtures for the Kubernetes tests: a stand-in cluster, and the CLI pointed at it.

from tests.kube_standin.fixtures import kube, standin  # noqa: F401

def test_kube_something(kube):                       # kube: KubeCli
    kube.cluster.add_pod("app", ["app"])
    result = kube.run("exec", "--target", "pod/app", "--", "/bin/true")
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mirrord_trace.kube.image import AGENT_IMAGE_ENV
from tests.conftest import ROOT
from tests.kube_standin.cluster import AGENT_IMAGE, StandinCluster

MIRRORD_TRACE = str(ROOT / ".venv" / "bin" / "mirrord-trace")


@pytest.fixture(name="standin")
def standin_fixture() -> Iterator[StandinCluster]:
    with StandinCluster(ROOT) as cluster:
        yield cluster
    assert not cluster.server_errors, "the stand-in failed:\n" + "\n".join(cluster.server_errors)


@dataclass
class KubeCli:
    """Runs the real `mirrord-trace` console script against the stand-in cluster."""

    cluster: StandinCluster
    home: Path

    @property
    def kubeconfig(self) -> Path:
        return self.home / "kubeconfig"

    def env(self, **extra: str) -> dict[str, str]:
        env = {**os.environ, "HOME": str(self.home), "KUBECONFIG": str(self.kubeconfig)}
        env[AGENT_IMAGE_ENV] = AGENT_IMAGE
        env.pop("KUBERNETES_SERVICE_HOST", None)
        return {**env, **extra}

    def run(
        self, *args: str, timeout: float = 120, **extra_env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [MIRRORD_TRACE, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(**extra_env),
            stdin=subprocess.DEVNULL,
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [MIRRORD_TRACE, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env(),
            stdin=subprocess.DEVNULL,
        )

    def config_file(self, name: str, content: str) -> Path:
        path = self.home / name
        path.write_text(content)
        return path


@pytest.fixture(name="kube")
def kube_fixture(standin: StandinCluster, tmp_path: Path) -> KubeCli:
    cli = KubeCli(standin, tmp_path)
    standin.write_kubeconfig(cli.kubeconfig)
    return cli


def wait_until(
    condition: Callable[[], object], timeout: float = 30, what: str | Callable[[], str] = ""
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            described = what() if callable(what) else what
            raise AssertionError(f"timed out waiting for {described or condition}")
        time.sleep(0.05)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("mirrord-trace: error:")]


def the_error(result: subprocess.CompletedProcess[str], status: int = 1) -> str:
    """The one error line of a failed command (progress lines may precede it)."""
    assert result.returncode == status, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    errors = error_lines(result.stderr)
    assert len(errors) == 1, result.stderr
    assert result.stderr.rstrip("\n").splitlines()[-1] == errors[0], result.stderr
    return errors[0]


def interrupt(process: subprocess.Popen[str]) -> None:
    """Ctrl-C as the user gives it: SIGINT to the CLI."""
    process.send_signal(signal.SIGINT)
