"""A session with a Kubernetes target: resolve it, start the agent next to it, reach it
through a port-forward; and on the way out (normal exit, error, Ctrl-C) remove the agent.

    with KubeAgent(target, config, progress) as client:   # an AgentClient
        client.request("env")
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from mirrord_trace.kube.agent_job import AgentJob
from mirrord_trace.kube.cluster import Cluster, connect
from mirrord_trace.kube.ephemeral import EphemeralAgent
from mirrord_trace.kube.image import agent_image
from mirrord_trace.kube.manifests import AgentLaunch, new_agent_name
from mirrord_trace.kube.port_forward import connect_agent
from mirrord_trace.kube.signals import termination_deferred, termination_interrupts
from mirrord_trace.kube.targets import resolve
from mirrord_trace.protocol import new_token
from mirrord_trace.targets import KubernetesTarget

if TYPE_CHECKING:
    from mirrord_trace.agent_client import AgentClient
    from mirrord_trace.config import Config

# Unless agent.communication_timeout says otherwise, the agent exits this long after its last
# session ends: it outlives a local side that was killed (no cleanup) by no more than this, and
# then its Job's TTL removes the rest.
AGENT_IDLE_TTL = 30
# An ephemeral container cannot be deleted: its agent ends soon after the session does.
EPHEMERAL_IDLE_TTL = 10
# Below Linux's default ephemeral port range: an ephemeral agent shares the target's network
# namespace, where outgoing connections take ports from that range.
_PORT_RANGE = (20000, 32767)


class AgentPlacement(Protocol):
    """Where the agent runs: a Job (agent_job.AgentJob) or an ephemeral container."""

    @property
    def namespace(self) -> str: ...
    def describe(self) -> str: ...
    def start(self) -> None: ...
    def wait_until_running(self, timeout: float, progress: Callable[[str], None]) -> str: ...
    def check_running(self, pod: str) -> None: ...
    def remove(self) -> str | None: ...


class KubeAgent:
    """Context manager: entering starts the agent and yields a connected AgentClient."""

    def __init__(
        self, target: KubernetesTarget, config: Config, progress: Callable[[str], None]
    ) -> None:
        self.target = target
        self.config = config
        self.progress = progress
        self.cluster: Cluster | None = None
        self.placement: AgentPlacement | None = None
        self.client: AgentClient | None = None
        self._forward: Any = None

    def __enter__(self) -> AgentClient:
        try:
            with termination_interrupts():
                return self._start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _start(self) -> AgentClient:
        started = time.monotonic()
        agent_config = self.config.agent
        self.cluster = connect(
            self.config.kubeconfig,
            self.config.kube_context,
            accept_invalid_certificates=self.config.accept_invalid_certificates,
        )
        image = agent_image(agent_config.image)  # before anything is asked of the cluster
        namespace = self.config.target.namespace or self.cluster.default_namespace
        target = resolve(self.cluster, self.target, namespace)
        self.progress(f"target {target} in namespace {namespace}, on node {target.node}")
        launch = AgentLaunch(
            name=new_agent_name(),
            namespace=agent_config.namespace or namespace,
            target=target,
            image=image,
            image_pull_policy=agent_config.image_pull_policy,
            port=_PORT_RANGE[0] + secrets.randbelow(_PORT_RANGE[1] - _PORT_RANGE[0]),
            token=new_token(),
            ttl=agent_config.ttl,
            privileged=agent_config.privileged,
            settings=agent_config,
            idle_ttl=agent_config.communication_timeout
            or (EPHEMERAL_IDLE_TTL if agent_config.ephemeral else AGENT_IDLE_TTL),
        )
        placement: AgentPlacement = (
            EphemeralAgent(self.cluster, launch)
            if agent_config.ephemeral
            else AgentJob(self.cluster, launch)
        )
        self.placement = placement
        self.progress(f"starting the agent: {placement.describe()}")
        placement.start()
        timeout = float(agent_config.startup_timeout)
        pod = placement.wait_until_running(timeout, self.progress)
        remaining = max(1.0, timeout - (time.monotonic() - started))
        self.client, self._forward = connect_agent(
            self.cluster,
            placement.namespace,
            pod,
            launch.port,
            launch.token,
            remaining,
            self.progress,
            lambda: placement.check_running(pod),
        )
        self.progress(f"agent ready in {time.monotonic() - started:.1f} s (pod {pod})")
        return self.client

    def close(self) -> None:
        """End the session and remove the agent; a second Ctrl-C cannot cut this short."""
        with termination_deferred():
            if self.client is not None:
                self.client.close()
                self.client = None
            if self._forward is not None:
                self._forward.close()
                self._forward = None
            if self.placement is not None:
                warning = self.placement.remove()
                self.placement = None
                if warning:
                    self.progress(f"warning: {warning}")
            if self.cluster is not None:
                self.cluster.close()
                self.cluster = None
