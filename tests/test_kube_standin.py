"""The stand-in API server answers the way the real one does: every object, list, watch event
and Status it sends validates against the upstream Kubernetes 1.37 OpenAPI schemas (strict),
and its port-forward speaks v4.channel.k8s.io with the `kubernetes` client's own portforward.
Without this, the other Kubernetes tests would only prove that mirrord-trace agrees with a
stand-in of our own making."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from mirrord_trace.kube.cluster import connect
from mirrord_trace.kube.manifests import AgentLaunch, agent_job, new_agent_name
from mirrord_trace.kube.port_forward import open_port_forward
from mirrord_trace.kube.targets import ResolvedTarget, label_selector
from tests.kube_standin import schemas
from tests.kube_standin.admission import ENFORCE_LABEL
from tests.kube_standin.cluster import HANGING_IMAGE, StandinCluster
from tests.kube_standin.fixtures import KubeCli, kube_fixture, standin_fixture, wait_until  # noqa: F401
from tests.kube_standin.port_forward import V4_CHANNEL


def validate_meta(schema_file: str, obj: dict[str, Any]) -> None:
    schemas.validate(obj, schema_file)


def validate(obj: dict[str, Any]) -> None:
    schemas.validate(obj)


def request(
    cluster: StandinCluster,
    method: str,
    path: str,
    body: Any = None,
    content_type: str = "application/json",
    token: str | None = None,
) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    sent = urllib.request.Request(cluster.url + path, data=data, method=method)
    sent.add_header("Authorization", f"Bearer {token or cluster.token}")
    if data is not None:
        sent.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(sent, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def agent_launch(name: str, image: str = HANGING_IMAGE) -> AgentLaunch:
    target = ResolvedTarget(
        "default", "app", "uid", "standin-node", "app", "containerd://" + "a" * 64
    )
    return AgentLaunch(
        name, "default", target, image, "IfNotPresent", 23456, "t" * 64, 1, False, 30
    )


def test_kube_standin_objects_lists_and_errors_match_the_schemas(standin: StandinCluster) -> None:
    standin.add_pod("app", ["app", "istio-proxy"], labels={"app": "app", "tier": "web"})
    standin.add_deployment("app", {"app": "app"})
    seen: list[dict[str, Any]] = []

    def answer(method: str, path: str, expected: int, body: Any = None, **kwargs: Any) -> dict:
        code, obj = request(standin, method, path, body, **kwargs)
        assert code == expected, obj
        validate(obj)
        seen.append(obj)
        return obj

    answer("GET", "/api/v1/namespaces/default/pods/app", 200)
    pods = answer("GET", "/api/v1/namespaces/default/pods?labelSelector=app%3Dapp", 200)
    assert [p["metadata"]["name"] for p in pods["items"]] == ["app"]
    answer("GET", "/apis/apps/v1/namespaces/default/deployments/app", 200)
    answer("GET", "/apis/apps/v1/namespaces/default/deployments", 200)
    name = new_agent_name()
    job = answer(
        "POST", "/apis/batch/v1/namespaces/default/jobs", 201, agent_job(agent_launch(name))
    )
    assert job["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"]
    wait_until(lambda: standin.agent_pods(), what="the job's pod")
    (agent_pod,) = standin.agent_pods()
    validate(agent_pod)
    assert agent_pod["metadata"]["labels"]["job-name"] == name
    answer("GET", f"/apis/batch/v1/namespaces/default/jobs/{name}", 200)
    answer("GET", "/apis/batch/v1/namespaces/default/jobs", 200)
    # Errors are Status objects shaped as the real ones.
    missing = answer("GET", "/api/v1/namespaces/default/pods/nope", 404)
    assert (missing["reason"], missing["message"]) == ("NotFound", 'pods "nope" not found')
    answer("POST", "/apis/batch/v1/namespaces/default/jobs", 409, agent_job(agent_launch(name)))
    answer("GET", "/api/v1/namespaces/default/nonsense", 404)
    answer("GET", "/api/v1/namespaces/default/pods?fieldSelector=spec.bogus%3D1", 400)
    unauthorized = answer("GET", "/api/v1/namespaces/default/pods", 401, token="wrong")
    assert unauthorized["message"] == "Unauthorized"
    standin.rbac_rules = []
    forbidden = answer("DELETE", f"/apis/batch/v1/namespaces/default/jobs/{name}", 403)
    assert forbidden["details"] == {"name": name, "group": "batch", "kind": "jobs"}
    standin.rbac_rules = None
    deleted = answer(
        "DELETE", f"/apis/batch/v1/namespaces/default/jobs/{name}?propagationPolicy=Background", 200
    )
    assert deleted["status"] == "Success"
    wait_until(lambda: not standin.agent_pods(), what="the garbage collector")
    # Refusals of pod security admission: the job controller records them as events.
    standin.add_namespace("default", {ENFORCE_LABEL: "baseline"})
    refused = new_agent_name()
    answer("POST", "/apis/batch/v1/namespaces/default/jobs", 201, agent_job(agent_launch(refused)))
    selector = f"involvedObject.kind%3DJob,involvedObject.name%3D{refused}"
    wait_until(
        lambda: request(
            standin, "GET", f"/api/v1/namespaces/default/events?fieldSelector={selector}"
        )[1]["items"],
        what="the FailedCreate event",
    )
    events = answer("GET", f"/api/v1/namespaces/default/events?fieldSelector={selector}", 200)
    assert events["items"][0]["reason"] == "FailedCreate"
    assert "violates PodSecurity" in events["items"][0]["message"]
    patch = {
        "spec": {
            "ephemeralContainers": [
                {"name": "dbg", "image": "busybox", "securityContext": {"privileged": True}}
            ]
        }
    }
    answer(
        "PATCH",
        "/api/v1/namespaces/default/pods/app/ephemeralcontainers",
        403,
        patch,
        content_type="application/strategic-merge-patch+json",
    )
    assert len(seen) == 17


def test_kube_standin_watch_streams_schema_valid_events(standin: StandinCluster) -> None:
    standin.add_pod("app", ["app"])
    received: list[dict[str, Any]] = []

    def watch() -> None:
        sent = urllib.request.Request(
            f"{standin.url}/api/v1/namespaces/default/pods?watch=true&timeoutSeconds=3"
            "&fieldSelector=metadata.name%3Dlater"
        )
        sent.add_header("Authorization", f"Bearer {standin.token}")
        with urllib.request.urlopen(sent, timeout=10) as stream:
            received.extend(json.loads(line) for line in stream if line.strip())

    watcher = threading.Thread(target=watch)
    watcher.start()
    time.sleep(0.5)
    standin.add_pod("later", ["app"])
    standin.controllers.delete_pod("default", "later")
    watcher.join(timeout=15)
    assert [event["type"] for event in received] == ["ADDED", "MODIFIED", "DELETED"]
    for event in received:
        validate_meta("watchevent-meta-v1.json", event)
        validate(event["object"])  # full objects, with apiVersion and kind


@pytest.fixture
def echo_server() -> Iterator[int]:
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        listener.close()


def test_kube_standin_port_forward_with_the_kubernetes_client(
    kube: KubeCli, echo_server: int
) -> None:
    kube.cluster.add_pod("app", ["app"])
    cluster = connect(str(kube.kubeconfig))
    forward = open_port_forward(cluster, "default", "app", echo_server)
    sock = forward.socket(echo_server)._socket
    payload = bytes(range(256)) * 2000  # several frames each way
    sender = threading.Thread(target=sock.sendall, args=(payload,))
    sender.start()
    echoed = b""
    while len(echoed) < len(payload):
        echoed += sock.recv(65536)
    sender.join()
    assert echoed == payload
    forward.close()
    # Nothing listening: the kubelet's error arrives on the error channel, the stream ends.
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed_port = unused.getsockname()[1]
    forward = open_port_forward(cluster, "default", "app", closed_port)
    assert forward.socket(closed_port)._socket.recv(1) == b""
    wait_until(lambda: forward.error(closed_port), what="the error channel")
    assert forward.error(closed_port).startswith(f"error forwarding port {closed_port} to pod")
    assert "connect: connection refused" in forward.error(closed_port)
    forward.close()
    cluster.close()


def test_kube_standin_negotiates_only_v4_channel(standin: StandinCluster) -> None:
    standin.add_pod("app", ["app"])
    with socket.create_connection(("127.0.0.1", int(standin.url.rsplit(":", 1)[1]))) as conn:
        conn.sendall(
            b"GET /api/v1/namespaces/default/pods/app/portforward?ports=1 HTTP/1.1\r\n"
            b"Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Protocol: v5.channel.k8s.io, " + V4_CHANNEL.encode() + b"\r\n"
            b"Authorization: Bearer " + standin.token.encode() + b"\r\n\r\n"
        )
        received = b""
        while b"\r\n\r\n" not in received:  # frames (the port numbers) follow the head
            received += conn.recv(4096)
        head = received.split(b"\r\n\r\n")[0].decode()
    assert head.startswith("HTTP/1.1 101")
    assert f"Sec-WebSocket-Protocol: {V4_CHANNEL}" in head
    assert "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head  # RFC 6455's example


def test_kube_label_selectors_select_as_the_api_server_does(standin: StandinCluster) -> None:
    for name, labels in {
        "a": {"app": "x", "tier": "web"},
        "b": {"app": "x"},
        "c": {"app": "y"},
    }.items():
        standin.add_pod(name, ["c"], labels=labels)
    cases = [
        ({"matchLabels": {"app": "x"}}, ["a", "b"]),
        (
            {
                "matchLabels": {"app": "x"},
                "matchExpressions": [{"key": "tier", "operator": "Exists"}],
            },
            ["a"],
        ),
        ({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, ["b", "c"]),
        (
            {"matchExpressions": [{"key": "app", "operator": "In", "values": ["x", "y"]}]},
            ["a", "b", "c"],
        ),
        ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["x"]}]}, ["c"]),
    ]
    for selector, expected in cases:
        items, _ = standin.store.list("Pod", "default", label_selector(selector))
        assert [pod["metadata"]["name"] for pod in items] == expected, selector
