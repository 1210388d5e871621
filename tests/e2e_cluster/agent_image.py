"""The agent image in the cluster's registry, as a user gets it into theirs: built with
`make agent-image` (an OCI archive of this checkout's agent) and pushed with
`mirrord-trace agent-image push`."""

from __future__ import annotations

import subprocess

from tests.cluster import layout
from tests.e2e_cluster.workloads import MIRRORD_TRACE

ARCHIVE = layout.BUILD / "agent-image" / "agent.oci.tar"
REFERENCE = f"{layout.REGISTRY}/mirrord-trace/agent:e2e"


def pushed_agent_image() -> str:
    """Builds the archive from this checkout (the base tree is cached after the first time;
    a stale image would speak an older protocol), pushes it; -> the reference by digest, so
    that the node never runs an older image it has under the same tag."""
    subprocess.run(["make", "-s", "agent-image"], cwd=layout.REPO, check=True, capture_output=True)
    pushed = subprocess.run(
        [MIRRORD_TRACE, "agent-image", "push", REFERENCE, "--archive", str(ARCHIVE)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    reference = pushed.stdout.strip().splitlines()[-1]
    assert "@sha256:" in reference, pushed.stdout
    return reference
