"""Every path, port, address range and image name of the test cluster, in one place."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "build"
# Built binaries, kept across cluster-down (cached build output).
BIN = BUILD / "cluster-bin"
KUBE = BIN / "kube"
COREDNS = BIN / "coredns"
PAUSE = BIN / "pause"
IMAGES = BIN / "images"
# Everything a running cluster owns; cluster-down removes it all.
STATE = BUILD / "cluster"
PKI = STATE / "pki"
LOGS = STATE / "logs"
PIDS = STATE / "pids"
KUBECONFIG = STATE / "kubeconfig"
CONTAINERD_SOCK = STATE / "containerd.sock"
CONTAINERD_ROOT = STATE / "containerd" / "root"
CONTAINERD_STATE = STATE / "containerd" / "state"
KUBELET_ROOT = STATE / "kubelet"
POD_LOGS = STATE / "pod-logs"
ETCD_DATA = STATE / "etcd"
REGISTRY_DATA = STATE / "registry"
CNI_CONF_DIR = STATE / "cni" / "net.d"
CNI_IPAM_DIR = STATE / "cni" / "ipam"
# What was on the machine before `up`, so that `down` removes only what the cluster added.
BEFORE = STATE / "before.json"

RELEASE = "v1.34.4"
NODE_NAME = "mirrord-trace-node"
ETCD_CLIENT_URL = "http://127.0.0.1:23790"
ETCD_PEER_URL = "http://127.0.0.1:23800"
APISERVER_PORT = 6443
KUBELET_PORT = 10250
KUBELET_HEALTHZ_PORT = 10248
PROXY_METRICS = "127.0.0.1:10249"
PROXY_HEALTHZ = "127.0.0.1:10256"
REGISTRY = "127.0.0.1:5000"
SERVICE_CIDR = "10.96.0.0/16"
APISERVER_SERVICE_IP = "10.96.0.1"
DNS_SERVICE_IP = "10.96.0.10"
POD_CIDR = "10.244.0.0/24"
CLUSTER_DOMAIN = "cluster.local"
CNI_NETWORK = "mirrord-trace"
CNI_BRIDGE = "mtcni0"
CNI_BIN_DIR = Path("/usr/lib/cni")
RUNC = Path("/usr/sbin/runc")
PAUSE_IMAGE = "localhost/mirrord-trace/pause:1"
COREDNS_IMAGE = "localhost/mirrord-trace/coredns:1.13.1"


def node_ip() -> str:
    """The address of the interface that holds the default route: the API server's endpoint
    must be reachable from pods, so it cannot be loopback."""
    out = subprocess.run(
        # a route lookup only: nothing is sent
        ["ip", "-4", "route", "get", "1.1.1.1"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if "src" in out:
        return out[out.index("src") + 1]
    return socket.gethostbyname(socket.gethostname())


def apiserver_url(ip: str) -> str:
    return f"https://{ip}:{APISERVER_PORT}"
