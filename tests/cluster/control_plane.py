"""etcd (embedded in the multi-call binary), kube-apiserver, kube-controller-manager and
kube-scheduler, set up as a real cluster is: TLS, client certificates, service-account tokens,
Node+RBAC authorization, the NodeRestriction and PodSecurity admission plugins."""

from __future__ import annotations

import time

from tests.cluster import kubeconfig, layout, processes
from tests.cluster.kubectl import kubectl


def _kube(component: str, *flags: str) -> list[str]:
    return [str(layout.KUBE), component, *flags]


def start_etcd() -> None:
    if processes.running("etcd"):
        return
    layout.ETCD_DATA.mkdir(parents=True, exist_ok=True)
    processes.start(
        "etcd",
        _kube(
            "etcd",
            f"--data-dir={layout.ETCD_DATA}",
            f"--listen-client-url={layout.ETCD_CLIENT_URL}",
            f"--listen-peer-url={layout.ETCD_PEER_URL}",
        ),
    )


def start_apiserver(node_ip: str) -> None:
    if processes.running("kube-apiserver"):
        return
    pki = layout.PKI
    processes.start(
        "kube-apiserver",
        _kube(
            "kube-apiserver",
            f"--etcd-servers={layout.ETCD_CLIENT_URL}",
            f"--bind-address={node_ip}",
            f"--advertise-address={node_ip}",
            f"--secure-port={layout.APISERVER_PORT}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            # the node's name is not in any DNS: exec, logs, port-forward go to its address
            "--kubelet-preferred-address-types=InternalIP",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-account-issuer=https://kubernetes.default.svc.{layout.CLUSTER_DOMAIN}",
            f"--service-cluster-ip-range={layout.SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction,PodSecurity",
            "--allow-privileged=true",
            "--profiling=false",
            f"--cert-dir={pki / 'apiserver-generated'}",
            "--v=1",
        ),
    )


def start_controllers() -> None:
    pki = layout.PKI
    if not processes.running("kube-controller-manager"):
        config = str(kubeconfig.component("controller-manager"))
        processes.start(
            "kube-controller-manager",
            _kube(
                "kube-controller-manager",
                f"--kubeconfig={config}",
                f"--authentication-kubeconfig={config}",
                f"--authorization-kubeconfig={config}",
                "--secure-port=0",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                f"--service-cluster-ip-range={layout.SERVICE_CIDR}",
                "--v=1",
            ),
        )
    if not processes.running("kube-scheduler"):
        config = str(kubeconfig.component("scheduler"))
        processes.start(
            "kube-scheduler",
            _kube(
                "kube-scheduler",
                f"--kubeconfig={config}",
                f"--authentication-kubeconfig={config}",
                f"--authorization-kubeconfig={config}",
                "--secure-port=0",
                "--leader-elect=false",
                "--v=1",
            ),
        )


def wait_ready(timeout: float = 120) -> None:
    """Until /readyz passes (etcd reachable, RBAC bootstrap roles in place)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            kubectl("get", "--raw", "/readyz")
            return
        except RuntimeError as error:
            for name in ("etcd", "kube-apiserver"):
                if not processes.running(name):
                    raise RuntimeError(f"{name} exited:\n{processes.log_tail(name)}") from error
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"kube-apiserver not ready after {timeout:.0f} s: {error}\n"
                    + processes.log_tail("kube-apiserver")
                ) from error
            time.sleep(0.5)
