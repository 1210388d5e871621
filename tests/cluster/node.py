"""The node: kubelet (cgroup v1 through cgroupfs, containerd's CRI over build/cluster's socket)
and kube-proxy in iptables mode."""

from __future__ import annotations

import json
import time

import yaml

from tests.cluster import kubeconfig, layout, processes
from tests.cluster.kubectl import kubectl


def _kubelet_config() -> dict:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(layout.PKI / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "address": "0.0.0.0",
        "port": layout.KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": layout.KUBELET_HEALTHZ_PORT,
        "containerRuntimeEndpoint": f"unix://{layout.CONTAINERD_SOCK}",
        "cgroupDriver": "cgroupfs",
        # This machine mounts cgroup v1; 1.34's kubelet still runs there when told to.
        "failCgroupV1": False,
        "failSwapOn": False,
        "clusterDNS": [layout.DNS_SERVICE_IP],
        "clusterDomain": layout.CLUSTER_DOMAIN,
        "resolvConf": "/etc/resolv.conf",
        "podLogsDir": str(layout.POD_LOGS),
        # The machine is shared: no eviction or image GC because another checkout fills the disk.
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "rotateCertificates": False,
        # kubelet sets the kernel settings it relies on (overcommit, panic on oops);
        # host_state records them first and `down` puts them back.
        "protectKernelDefaults": False,
        "makeIPTablesUtilChains": True,
        "maxPods": 50,
    }


def start_kubelet(node_ip: str) -> None:
    if processes.running("kubelet"):
        return
    config = layout.STATE / "kubelet-config.yaml"
    config.write_text(yaml.safe_dump(_kubelet_config()))
    layout.KUBELET_ROOT.mkdir(parents=True, exist_ok=True)
    layout.POD_LOGS.mkdir(parents=True, exist_ok=True)
    processes.start(
        "kubelet",
        [
            str(layout.KUBE),
            "kubelet",
            f"--config={config}",
            f"--kubeconfig={kubeconfig.component('kubelet')}",
            f"--root-dir={layout.KUBELET_ROOT}",
            f"--cert-dir={layout.KUBELET_ROOT / 'pki'}",
            f"--hostname-override={layout.NODE_NAME}",
            f"--node-ip={node_ip}",
            "--v=1",
        ],
    )


def _proxy_config() -> dict:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(kubeconfig.component("kube-proxy"))},
        "hostnameOverride": layout.NODE_NAME,
        "clusterCIDR": layout.POD_CIDR,
        "metricsBindAddress": layout.PROXY_METRICS,
        "healthzBindAddress": layout.PROXY_HEALTHZ,
        # 0: leave nf_conntrack_max and the TCP timeouts as the machine has them.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        # NodePorts on the node's address only: no route_localnet for loopback NodePorts.
        "nodePortAddresses": ["primary"],
    }


def start_proxy() -> None:
    if processes.running("kube-proxy"):
        return
    config = layout.STATE / "kube-proxy-config.yaml"
    config.write_text(json.dumps(_proxy_config()))
    processes.start("kube-proxy", [str(layout.KUBE), "kube-proxy", f"--config={config}", "--v=1"])


def wait_ready(timeout: float = 120) -> None:
    """Until the node reports Ready."""
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        for name in ("kubelet", "kube-proxy"):
            if not processes.running(name):
                raise RuntimeError(f"{name} exited:\n{processes.log_tail(name)}")
        status = kubectl(
            "get",
            "node",
            layout.NODE_NAME,
            "--ignore-not-found",
            "-o",
            "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
        )
        if status == "True":
            return
        time.sleep(1)
    raise RuntimeError(
        f"node {layout.NODE_NAME} not Ready after {timeout:.0f} s (Ready={status!r}):\n"
        + processes.log_tail("kubelet")
    )
