"""The cluster itself, before any agent: the node is Ready, a pod from an image built here
reaches a Service by name through CoreDNS and kube-proxy, the host reaches it by ClusterIP, and
`mirrord-trace ls` lists the real pods."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator

import pytest

from tests.cluster import coredns, layout
from tests.e2e_cluster.workloads import MIRRORD_TRACE, Kube, busybox_image

pytestmark = pytest.mark.cluster

NAMESPACE = "e2e-basics"
IMAGE = "localhost/mirrord-trace-e2e/busybox:1"
GREETING = "hello from web in e2e-basics"


def _web(image: str) -> list[dict]:
    labels = {"app": "web"}
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": NAMESPACE},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [
                            {
                                "name": "web",
                                "image": image,
                                "imagePullPolicy": "Never",
                                "command": [
                                    "sh",
                                    "-c",
                                    f"echo '{GREETING}' > /www/index.html; "
                                    "exec httpd -f -p 8080 -h /www",
                                ],
                                "ports": [{"containerPort": 8080}],
                                "readinessProbe": {
                                    "tcpSocket": {"port": 8080},
                                    "periodSeconds": 1,
                                },
                            }
                        ]
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": NAMESPACE},
            "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]},
        },
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "client", "namespace": NAMESPACE},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    {
                        "name": "client",
                        "image": image,
                        "imagePullPolicy": "Never",
                        "command": ["sleep", "3600"],
                    }
                ],
            },
        },
    ]


@pytest.fixture(scope="module")
def web(kube: Kube) -> Iterator[Kube]:
    image = busybox_image(IMAGE)
    kube.namespace(NAMESPACE)
    try:
        kube.apply(*_web(image))
        kube.wait(NAMESPACE, "deployment/web", "condition=Available")
        kube.wait(NAMESPACE, "pod/client", "condition=Ready")
        yield kube
    finally:
        kube.delete_namespace(NAMESPACE)


def test_node_is_ready_with_the_built_release(kube: Kube) -> None:
    node = kube.json("get", "node", layout.NODE_NAME)
    ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
    assert ready == "True"
    info = node["status"]["nodeInfo"]
    assert info["kubeletVersion"] == layout.RELEASE
    assert info["containerRuntimeVersion"].startswith("containerd://")


@pytest.mark.parametrize(
    "name",
    ["web", f"web.{NAMESPACE}", f"web.{NAMESPACE}.svc.{layout.CLUSTER_DOMAIN}"],
    ids=["short", "name.namespace", "fqdn"],
)
def test_pod_reaches_service_by_name(web: Kube, name: str) -> None:
    body = web.run("exec", "-n", NAMESPACE, "client", "--", "wget", "-qO-", f"http://{name}/")
    assert body.strip() == GREETING


def test_host_resolves_and_reaches_the_cluster_ip(web: Kube) -> None:
    cluster_ip = web.json("get", "service", "-n", NAMESPACE, "web")["spec"]["clusterIP"]
    fqdn = f"web.{NAMESPACE}.svc.{layout.CLUSTER_DOMAIN}"
    assert coredns.query_a(fqdn) == [cluster_ip]
    # No proxy: the ClusterIP is reached through kube-proxy's rules on this host.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{cluster_ip}/", timeout=10) as answer:
        assert answer.read().decode().strip() == GREETING


def test_ls_lists_the_real_pods(web: Kube, cli_env: dict[str, str]) -> None:
    pods = web.json("get", "pods", "-n", NAMESPACE, "-l", "app=web")["items"]
    result = subprocess.run(
        [MIRRORD_TRACE, "ls", "-n", NAMESPACE, "-o", "json"],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        "pod/client",
        f"pod/{pods[0]['metadata']['name']}",
        "deployment/web",
    ]
