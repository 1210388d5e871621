"""`make cluster`: starts the one-node cluster (what already runs is kept) and returns when the
node is Ready and CoreDNS answers through its ClusterIP from this host.

The binaries come from `make cluster-bin`; this starts processes, detached, with their logs and
pid files under build/cluster.
"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

from tests.cluster import (
    certs,
    containerd,
    control_plane,
    coredns,
    host_state,
    images,
    kubeconfig,
    layout,
    node,
    processes,
    registry,
)


def _check_binaries() -> None:
    missing = [str(p) for p in (layout.KUBE, layout.COREDNS, layout.PAUSE) if not p.exists()]
    if missing:
        sys.exit(f"cluster: missing {', '.join(missing)}; run `make cluster` (it builds them)")


def _check_port_free(name: str, host: str, port: int) -> None:
    if processes.running(name):
        return
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            sys.exit(
                f"cluster: {host}:{port} (for {name}) is taken ({error.strerror}); "
                "stop what listens there or change it in tests/cluster/layout.py"
            )


def _set_sysctl(key: str, value: str) -> None:
    path = Path("/proc/sys") / key
    if path.exists() and path.read_text().strip() != value:
        path.write_text(value)


def _kubeconfigs(server: str) -> None:
    kubeconfig.write(layout.KUBECONFIG, server, "admin")
    for name in ("controller-manager", "scheduler", "kube-proxy", "kubelet"):
        kubeconfig.write(kubeconfig.component(name), server, name)


def up() -> None:
    _check_binaries()
    ip = layout.node_ip()
    registry_host, registry_port = layout.REGISTRY.split(":")
    _check_port_free("registry", registry_host, int(registry_port))
    _check_port_free("kube-apiserver", ip, layout.APISERVER_PORT)
    _check_port_free("kubelet", "0.0.0.0", layout.KUBELET_PORT)
    host_state.record()
    # Pods reach the API server and each other through the host: routing and bridge netfilter.
    _set_sysctl("net/ipv4/ip_forward", "1")
    _set_sysctl("net/bridge/bridge-nf-call-iptables", "1")
    certs.generate(ip)
    _kubeconfigs(layout.apiserver_url(ip))
    registry.start()
    containerd.start()
    images.import_all()
    control_plane.start_etcd()
    control_plane.start_apiserver(ip)
    control_plane.wait_ready()
    control_plane.start_controllers()
    node.start_kubelet(ip)
    node.start_proxy()
    node.wait_ready()
    coredns.deploy()
    coredns.wait_answering()


def main() -> None:
    started = time.monotonic()
    try:
        up()
    except RuntimeError as error:
        sys.exit(f"cluster: {error}\n(logs: {layout.LOGS}; `make cluster-down` cleans up)")
    print(
        f"cluster: ready in {time.monotonic() - started:.1f} s; "
        f"KUBECONFIG={layout.KUBECONFIG}, containerd at {layout.CONTAINERD_SOCK}, "
        f"registry at {layout.REGISTRY}"
    )


if __name__ == "__main__":
    main()
