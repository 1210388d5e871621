"""kubectl (the multi-call binary's) as the cluster's admin, for set-up and readiness checks."""

from __future__ import annotations

import subprocess

from tests.cluster import layout


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> str:
    result = subprocess.run(
        [str(layout.KUBE), "kubectl", "--kubeconfig", str(layout.KUBECONFIG), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout
