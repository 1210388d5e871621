"""Kubernetes targets: `pod/NAME[/container/C]` and `deployment/NAME[/container/C]`.

Reading order, following the data:
    cluster.py      kubeconfig/context -> API client; every call's errors classified (errors.py)
    targets.py      target -> one running container: pod, node, container id
    manifests.py    the agent's Job (hostPID, on that node) or ephemeral container
    agent_job.py / ephemeral.py   create it; pod_watch.py + pod_state.py wait for it
    port_forward.py the API server's port-forward to the agent, the session over it
    session.py      KubeAgent: all of the above, and removal on exit or Ctrl-C (signals.py),
                    with start-up progress on stderr (progress.py)
    listing.py      `mirrord-trace ls`

Importing this package imports the `kubernetes` client (slow): the CLI does it only for
Kubernetes targets.
"""

from mirrord_trace.kube.cluster import connect
from mirrord_trace.kube.errors import KubeError
from mirrord_trace.kube.listing import list_targets
from mirrord_trace.kube.progress import Progress
from mirrord_trace.kube.session import KubeAgent

__all__ = ["KubeAgent", "KubeError", "Progress", "connect", "list_targets"]
