"""What the host holds that a cluster adds: network namespaces, links, iptables chains, mounts
and kernel settings. `up` records it before starting, `down` removes what was added and puts the
settings back, and the cleanup test compares the two."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from tests.cluster import layout

# The settings kubelet, kube-proxy or `up` change; `down` restores what they were.
SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/bridge/bridge-nf-call-iptables",
    "net/ipv4/conf/all/route_localnet",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
TABLES = ("filter", "nat", "mangle", "raw")


def netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def chains(command: str = "iptables") -> set[str]:
    """'table/chain' of every chain iptables-save lists (built-in and user-defined)."""
    out = subprocess.run([f"{command}-save"], capture_output=True, text=True).stdout
    found, table = set(), ""
    for line in out.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            found.add(f"{table}/{line[1:].split()[0]}")
    return found


def mounts() -> set[str]:
    return {line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()}


def sysctls() -> dict[str, str]:
    values = {}
    for key in SYSCTLS:
        path = Path("/proc/sys") / key
        if path.exists():
            values[key] = path.read_text().strip()
    return values


def cluster_processes() -> set[str]:
    """Processes whose command line names this checkout's cluster state or binaries."""
    found = set()
    needles = (str(layout.STATE).encode(), str(layout.BIN).encode())
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if any(needle in cmdline for needle in needles):
            found.add(proc.name + " " + cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return found


# Host directories containerd, kubelet and the CNI plugins write into whatever their settings.
HOST_DIRS = (Path("/var/log/containers"), Path("/var/lib/cni/results"), Path("/run/containerd/s"))


# Host directories those writers create when missing; `down` removes the ones `up` did not find
# (when empty), children before parents.
HOST_DIRS_CREATED = (
    Path("/var/log/containers"),
    Path("/var/lib/cni/results"),
    Path("/var/lib/cni"),
    Path("/run/containerd/s"),  # shims' sockets
    Path("/run/containerd/fifo"),  # ctr's
    Path("/run/containerd"),
)


def host_dirs() -> set[str]:
    return {str(d) for d in HOST_DIRS_CREATED if d.is_dir()}


def host_files() -> set[str]:
    return {str(p) for d in HOST_DIRS if d.is_dir() for p in d.iterdir()}


def snapshot() -> dict:
    return {
        "files": sorted(host_files()),
        "dirs": sorted(host_dirs()),
        "netns": sorted(netns()),
        "links": sorted(links()),
        "iptables": sorted(chains("iptables")),
        "ip6tables": sorted(chains("ip6tables")),
        "mounts": sorted(mounts()),
        "sysctls": sysctls(),
    }


def record() -> None:
    """Keeps the first snapshot: a second `up` on a running cluster must not overwrite it."""
    if not layout.BEFORE.exists():
        layout.STATE.mkdir(parents=True, exist_ok=True)
        layout.BEFORE.write_text(json.dumps(snapshot(), indent=1))


def recorded() -> dict | None:
    try:
        return json.loads(layout.BEFORE.read_text())
    except (OSError, ValueError):
        return None


def is_cluster_chain(name: str) -> bool:
    return re.match(r"(KUBE|CNI)-", name) is not None
