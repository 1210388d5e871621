"""Reaching the agent through the API server's port-forward (WebSocket, v4.channel.k8s.io,
through the `kubernetes` client's portforward), and opening the agent session over it.

A running container is not yet a listening agent: until it listens, the kubelet reports the
failed dial on the port's error channel and closes the data channel; we retry until the
startup deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kubernetes.client.exceptions import ApiException
from kubernetes.stream.ws_client import portforward_call
from websocket import WebSocketBadStatusException

from mirrord_trace.agent_client import AgentClient, AgentConnectError, HandshakeRejected
from mirrord_trace.kube.cluster import Cluster, core_path
from mirrord_trace.kube.errors import (
    Action,
    AgentFailed,
    AgentStartTimeout,
    ApiFailure,
    from_api_answer,
)
from mirrord_trace.kube.signals import threads_spared_termination_signals

HANDSHAKE_TIMEOUT = 10.0
_RETRY_PAUSE = 0.25


def open_port_forward(cluster: Cluster, namespace: str, pod: str, port: int) -> Any:
    """A kubernetes.stream PortForward to `pod`:`port` (one WebSocket, one connection)."""
    action = Action("create", "pods/portforward", namespace, pod)
    query = {"ports": str(port)}
    url, headers = cluster.websocket_headers_and_url(
        core_path(namespace, "pods", pod, "portforward"), query
    )
    try:
        with threads_spared_termination_signals():  # it starts a proxy thread
            return portforward_call(
                cluster.api_client.configuration,
                "GET",
                url,
                query_params=list(query.items()),
                headers=headers,
            )
    except ApiException as error:
        # The client wraps the WebSocket handshake failure; the answer (a Status) is inside.
        cause = error.__context__
        if isinstance(cause, WebSocketBadStatusException) and cause.status_code:
            raise from_api_answer(
                cause.status_code, cause.resp_body, action, cluster.context
            ) from None
        raise cluster.unreachable(cause or error) from None


def connect_agent(
    cluster: Cluster,
    namespace: str,
    pod: str,
    port: int,
    token: str,
    timeout: float,
    progress: Callable[[str], None],
    check_agent: Callable[[], None],
) -> tuple[AgentClient, Any]:
    """-> (agent session, the PortForward carrying it). Close both when done.

    `check_agent` raises the reason when the agent has stopped (its container exited, its pod
    failed): asked whenever a connection attempt fails, so a dead agent is reported as such
    rather than as a port-forward problem or a timeout.
    """
    deadline = time.monotonic() + timeout
    where = f"pod {pod} port {port} (port-forward)"
    while True:
        try:
            forward = open_port_forward(cluster, namespace, pod, port)
        except ApiFailure as error:
            check_agent()  # e.g. 400 "pod is not running": say why it is not
            problem = error.message
        else:
            # The client hands out a wrapper of one end of a socket pair; the session wants
            # the socket itself (the wrapper only hides setsockopt calls a pair refuses).
            sock = forward.socket(port)._socket
            try:
                with threads_spared_termination_signals():  # the session's I/O thread
                    client = AgentClient.over_socket(
                        sock, token, where=where, timeout=HANDSHAKE_TIMEOUT
                    )
                return client, forward
            except HandshakeRejected as error:
                forward.close()
                raise AgentFailed(
                    f"the agent in pod {pod} refused the session: {error}",
                    "another mirrord-trace may be using this agent; try again",
                ) from None
            except AgentConnectError as error:
                problem = " ".join((forward.error(port) or str(error)).split())
                forward.close()
            check_agent()
        if time.monotonic() >= deadline:
            raise AgentStartTimeout(
                f"the agent in pod {pod} did not answer through the port-forward within "
                f"{timeout:g} s: {problem}",
                f"look at its log: 'kubectl -n {namespace} logs {pod}'",
            )
        progress("waiting for the agent to listen")
        time.sleep(_RETRY_PAUSE)
