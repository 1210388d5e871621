"""containerd (Debian's, with runc and the CNI plugins) configured for the cluster: its root,
state and socket under build/cluster, the CNI bridge network, the pause image, and plain HTTP
for the loopback registry."""

from __future__ import annotations

import json
import time

from tests.cluster import layout, processes

NAME = "containerd"


def _config() -> str:
    hosts_dir = layout.STATE / "containerd" / "certs.d"
    return f"""version = 2
root = "{layout.CONTAINERD_ROOT}"
state = "{layout.CONTAINERD_STATE}"
[grpc]
  address = "{layout.CONTAINERD_SOCK}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{layout.STATE / "containerd" / "opt"}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{layout.PAUSE_IMAGE}"
  # No CAP_SYS_RESOURCE on these machines: a negative oom_score_adj (kubelet asks -998 for
  # sandboxes) cannot be set, so containerd raises it to its own instead of failing the pod.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  enable_cdi = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{layout.RUNC}"
        Root = "{layout.CONTAINERD_STATE / "runc"}"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{layout.CNI_BIN_DIR}"
    conf_dir = "{layout.CNI_CONF_DIR}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{hosts_dir}"
"""


def _registry_hosts() -> str:
    """containerd's hosts.toml for the loopback registry: pulled over plain HTTP."""
    return (
        f'server = "http://{layout.REGISTRY}"\n\n'
        f'[host."http://{layout.REGISTRY}"]\n'
        '  capabilities = ["pull", "resolve", "push"]\n'
        "  skip_verify = true\n"
    )


def _cni_config() -> dict:
    return {
        "cniVersion": "0.4.0",
        "name": layout.CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": layout.CNI_BRIDGE,
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(layout.CNI_IPAM_DIR),
                    "ranges": [[{"subnet": layout.POD_CIDR}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def write_config() -> None:
    base = layout.STATE / "containerd"
    base.mkdir(parents=True, exist_ok=True)
    (base / "config.toml").write_text(_config())
    hosts = base / "certs.d" / layout.REGISTRY
    hosts.mkdir(parents=True, exist_ok=True)
    (hosts / "hosts.toml").write_text(_registry_hosts())
    layout.CNI_CONF_DIR.mkdir(parents=True, exist_ok=True)
    (layout.CNI_CONF_DIR / "10-mirrord-trace.conflist").write_text(
        json.dumps(_cni_config(), indent=2)
    )


def start() -> None:
    if processes.running(NAME):
        return
    write_config()
    processes.start(
        NAME, ["containerd", "--config", str(layout.STATE / "containerd" / "config.toml")]
    )
    deadline = time.monotonic() + 30
    while not layout.CONTAINERD_SOCK.exists():
        if time.monotonic() > deadline or not processes.running(NAME):
            raise RuntimeError("containerd did not start:\n" + processes.log_tail(NAME))
        time.sleep(0.1)
