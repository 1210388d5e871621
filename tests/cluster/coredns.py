"""CoreDNS as the cluster DNS: the kube-dns Service at the address kubelet gives pods, a
Deployment of the image built here, and the RBAC its kubernetes plugin needs."""

from __future__ import annotations

import socket
import time

import yaml
from scapy.layers.dns import DNS, DNSQR, DNSRR

from tests.cluster import layout
from tests.cluster.kubectl import kubectl

COREFILE = f""".:53 {{
    errors
    health {{
        lameduck 5s
    }}
    ready
    kubernetes {layout.CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }}
    forward . /etc/resolv.conf
    cache 30
    loop
    reload
    loadbalance
}}
"""


def _manifests() -> list[dict]:
    labels = {"k8s-app": "kube-dns"}
    meta = {"name": "coredns", "namespace": "kube-system"}
    container = {
        "name": "coredns",
        "image": layout.COREDNS_IMAGE,
        "imagePullPolicy": "Never",
        "args": ["-conf", "/etc/coredns/Corefile"],
        "ports": [
            {"name": "dns", "containerPort": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
        ],
        "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns", "readOnly": True}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}, "periodSeconds": 2},
        "livenessProbe": {"httpGet": {"path": "/health", "port": 8080}},
        "resources": {"requests": {"cpu": "50m", "memory": "40Mi"}, "limits": {"memory": "170Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
        },
    }
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "system:coredns"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:coredns",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta,
            "data": {"Corefile": COREFILE},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {**meta, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": "coredns",
                        "priorityClassName": "system-cluster-critical",
                        # the node's resolv.conf, not the cluster DNS (itself)
                        "dnsPolicy": "Default",
                        "containers": [container],
                        "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
            "spec": {
                "selector": labels,
                "clusterIP": layout.DNS_SERVICE_IP,
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                ],
            },
        },
    ]


def deploy() -> None:
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(_manifests()))


def query_a(name: str, server: str = layout.DNS_SERVICE_IP, timeout: float = 2.0) -> list[str]:
    """The A records `server` answers for `name` (one UDP query from this host)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect((server, 53))
        sock.send(bytes(DNS(id=0x4D54, rd=1, qd=DNSQR(qname=name, qtype="A"))))
        reply = DNS(sock.recv(4096))
    answers = [reply.an[i] for i in range(reply.ancount)] if reply.ancount else []
    return [rr.rdata for rr in answers if isinstance(rr, DNSRR) and rr.type == 1]


def wait_answering(timeout: float = 120) -> str:
    """Until CoreDNS, through its ClusterIP, resolves the API server's Service name; returns
    the address it gave."""
    name = f"kubernetes.default.svc.{layout.CLUSTER_DOMAIN}"
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            answers = query_a(name)
            if layout.APISERVER_SERVICE_IP in answers:
                return layout.APISERVER_SERVICE_IP
            last = answers
        except OSError as error:
            last = error
        time.sleep(1)
    pods = kubectl("get", "pods", "-n", "kube-system", "-o", "wide", check=False)
    raise RuntimeError(f"CoreDNS did not answer {name} at {layout.DNS_SERVICE_IP}: {last}\n{pods}")
