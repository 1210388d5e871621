"""The agent image in the cluster's registry, as a user gets it into theirs: built with
`make agent-image` (an OCI archive) and pushed with `mirrord-trace agent-image push`."""

from __future__ import annotations

import subprocess

from tests.cluster import layout
from tests.e2e_cluster.workloads import MIRRORD_TRACE

ARCHIVE = layout.BUILD / "agent-image" / "agent.oci.tar"
REFERENCE = f"{layout.REGISTRY}/mirrord-trace/agent:e2e"


def pushed_agent_image() -> str:
    """Builds the archive when missing (debootstrap; cached after the first time), pushes it;
    -> the reference pods pull."""
    if not ARCHIVE.exists():
        subprocess.run(["make", "-s", "agent-image"], cwd=layout.REPO, check=True)
    subprocess.run(
        [MIRRORD_TRACE, "agent-image", "push", REFERENCE, "--archive", str(ARCHIVE)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return REFERENCE
