"""Waiting for a pod to reach a state, by watching it through the API server.

Each watch request is short (WATCH_WINDOW seconds) and starts without a resourceVersion, so it
opens with the pod's current state: nothing is missed between requests and no expired
resourceVersion (410 Gone) needs handling. Between requests, `while_absent` may look for the
reason a pod does not exist yet (the Job's FailedCreate events).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from mirrord_trace.kube.cluster import Cluster, core_path
from mirrord_trace.kube.errors import Action, AgentFailed, AgentStartTimeout

WATCH_WINDOW = 2.0

# pod JSON (None: no such pod yet) -> None when it is where we want it, else a description of
# what it waits for; raises a KubeError when it will never get there.
Evaluate = Callable[[dict[str, Any] | None], str | None]


def wait_for_pod(
    cluster: Cluster,
    namespace: str,
    *,
    evaluate: Evaluate,
    timeout: float,
    progress: Callable[[str], None],
    label_selector: str | None = None,
    field_selector: str | None = None,
    while_absent: Callable[[], None] | None = None,
    describe_hint: str = "",
) -> dict[str, Any]:
    """Watch the (one) pod that the selectors match until `evaluate` says it is ready."""
    deadline = time.monotonic() + timeout
    query = {
        key: value
        for key, value in (("labelSelector", label_selector), ("fieldSelector", field_selector))
        if value is not None
    }
    description = "waiting"
    pod: dict[str, Any] | None = None
    while (remaining := deadline - time.monotonic()) > 0:
        window = max(1, math.ceil(min(WATCH_WINDOW, remaining)))
        for event in cluster.watch(
            Action("watch", "pods", namespace), core_path(namespace, "pods"), query, window
        ):
            if event["type"] == "ERROR":
                break  # e.g. the watch expired: start a new one
            if event["type"] not in ("ADDED", "MODIFIED", "DELETED"):
                continue
            pod = event["object"]
            if event["type"] == "DELETED":
                raise AgentFailed(
                    f"pod {pod['metadata']['name']} was deleted while the agent was starting",
                    "someone or something removed it; try again",
                )
            result = evaluate(pod)
            if result is None:
                return pod
            description = result
            progress(description)
            if time.monotonic() >= deadline:
                break
        if pod is None:
            description = evaluate(None) or description
            progress(description)
            if while_absent is not None:
                while_absent()
    raise AgentStartTimeout(
        f"the agent was not ready within {timeout:g} s (last state: {description})",
        "raise agent.startup_timeout in the config file"
        + (f", or {describe_hint}" if describe_hint else ""),
    )
