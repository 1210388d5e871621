"""On the real cluster: an agent image the node cannot pull (never pushed to the cluster's
registry) ends `exec` with the pull error and the command that pushes it, as soon as the
kubelet reports the failure (long before agent.startup_timeout, whose message would differ),
and the agent's Job is removed."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import layout
from tests.e2e_cluster.workloads import MIRRORD_TRACE, Kube, busybox_image, wait_for

pytestmark = pytest.mark.cluster

NAMESPACE = "e2e-agent-image"
IMAGE = "localhost/mirrord-trace-e2e/busybox:1"
MISSING = f"{layout.REGISTRY}/mirrord-trace/agent-never-pushed:0.1.0"


@pytest.fixture(scope="module")
def target(kube: Kube) -> Iterator[Kube]:
    image = busybox_image(IMAGE)
    kube.namespace(NAMESPACE)
    try:
        # the agent pod needs hostPID and capabilities: a namespace that allows them
        kube.run("label", "namespace", NAMESPACE, "pod-security.kubernetes.io/enforce=privileged")
        kube.apply(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "app", "namespace": NAMESPACE},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {
                            "name": "app",
                            "image": image,
                            "imagePullPolicy": "Never",
                            "command": ["sleep", "3600"],
                        }
                    ],
                },
            }
        )
        kube.wait(NAMESPACE, "pod/app", "condition=Ready")
        yield kube
    finally:
        kube.delete_namespace(NAMESPACE)


def test_agent_image_the_node_cannot_pull(
    target: Kube, cli_env: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"agent": {"image": MISSING, "startup_timeout": 300}}))
    env = {key: value for key, value in cli_env.items() if key != "MIRRORD_AGENT_IMAGE"}
    result = subprocess.run(
        [
            *(MIRRORD_TRACE, "exec", "-f", str(config), "-n", NAMESPACE),
            *("--target", "pod/app", "--", "/bin/true"),
        ],
        env={**env, "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 1, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("mirrord-trace: error: the node cannot pull the agent image "), line
    assert MISSING in line
    assert "(ErrImagePull" in line or "(ImagePullBackOff" in line
    assert f"'mirrord-trace agent-image push {MISSING}'" in line
    assert "not ready within" not in line
    wait_for(
        lambda: not target.json("get", "jobs", "-n", NAMESPACE)["items"],
        timeout=60,
        what="the agent's Job to be removed",
    )
