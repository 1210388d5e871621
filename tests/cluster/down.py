"""`make cluster-down`: stops the cluster and removes everything it made on the host, in the
order that leaves nothing behind: daemons, containers, mounts, network namespaces, links,
iptables chains, cgroups, host files, kernel settings, then build/cluster itself.

Binaries and image archives (build/cluster-bin) stay: they are the build cache.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.cluster import host_state, layout, processes

# Stopped first to last: kubelet first so that nothing restarts containers, etcd last.
DAEMONS = (
    "kubelet",
    "kube-proxy",
    "kube-scheduler",
    "kube-controller-manager",
    "kube-apiserver",
    "etcd",
)
# The API server drains requests for up to a minute on SIGTERM; nothing is left to drain here.
GRACE = {"kube-apiserver": 2.0}
CGROUP_ROOT = Path("/sys/fs/cgroup")


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True)


def _remove_containers() -> None:
    """Each task killed and deleted through containerd (so each shim exits and removes its
    socket), then each container record."""
    ctr = ["ctr", "--address", str(layout.CONTAINERD_SOCK), "-n", "k8s.io"]
    tasks = _run(*ctr, "tasks", "ls", "-q").stdout.split()
    for task in tasks:
        _run(*ctr, "tasks", "kill", "-a", "-s", "SIGKILL", task)
    for task in tasks:
        for _ in range(50):
            if _run(*ctr, "tasks", "delete", "-f", task).returncode == 0:
                break
            time.sleep(0.1)
    for container in _run(*ctr, "containers", "ls", "-q").stdout.split():
        _run(*ctr, "containers", "delete", container)


def _pod_cgroups() -> list[Path]:
    """kubelet's cgroups in every v1 hierarchy (and the v2 one), deepest first."""
    found = []
    for hierarchy in CGROUP_ROOT.iterdir():
        top = hierarchy / "kubepods"
        if top.is_dir():
            found.extend(p for p in top.rglob("*") if p.is_dir())
            found.append(top)
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def _kill_pod_processes() -> None:
    for cgroup in _pod_cgroups():
        try:
            pids = (cgroup / "cgroup.procs").read_text().split()
        except OSError:
            continue
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)


def _remove_cgroups() -> None:
    for cgroup in _pod_cgroups():
        for _ in range(50):
            try:
                cgroup.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.1)


def _kill_leftovers() -> None:
    """Shims and anything else still running from this checkout's cluster."""
    for entry in host_state.cluster_processes():
        pid = int(entry.split()[0])
        if pid != os.getpid():
            processes.kill_pid(pid, grace=2)


def _unmount() -> None:
    """Every mount under build/cluster (kubelet's volumes, containerd's rootfs and shm),
    deepest first."""
    state = str(layout.STATE)
    points = [m for m in host_state.mounts() if m == state or m.startswith(state + "/")]
    for point in sorted(points, key=len, reverse=True):
        if _run("umount", point).returncode != 0:
            _run("umount", "-l", point)


def _remove_netns(before: set[str]) -> None:
    for name in host_state.netns() - before:
        if name.startswith("cni-"):
            _run("ip", "netns", "delete", name)


def _remove_links() -> None:
    """The pods' veths still on the cluster's bridge (a veth goes with its namespace), then the
    bridge; other checkouts' links are left alone."""
    out = _run("ip", "-o", "link", "show", "master", layout.CNI_BRIDGE).stdout
    for line in out.splitlines():
        _run("ip", "link", "delete", line.split(":")[1].strip().split("@")[0])
    if layout.CNI_BRIDGE in host_state.links():
        _run("ip", "link", "delete", layout.CNI_BRIDGE)


def _remove_chains(command: str, before: set[str]) -> None:
    """The KUBE-* and CNI-* chains that were not there before: the rules jumping to them out of
    other chains, then their own rules, then the chains."""
    added = {
        c
        for c in host_state.chains(command) - before
        if host_state.is_cluster_chain(c.split("/")[1])
    }
    for table in host_state.TABLES:
        ours = {c.split("/")[1] for c in added if c.startswith(table + "/")}
        if not ours:
            continue
        saved = _run(f"{command}-save", "-t", table).stdout.splitlines()
        for line in saved:
            words = shlex.split(line)  # comments are quoted
            if len(words) < 3 or words[0] != "-A" or words[1] in ours:
                continue
            if any(words[i + 1] in ours for i, w in enumerate(words[:-1]) if w in ("-j", "-g")):
                _run(command, "-t", table, "-D", *words[1:])
        for chain in ours:
            _run(command, "-t", table, "-F", chain)
        for chain in ours:
            _run(command, "-t", table, "-X", chain)


def _remove_host_files(before: set[str]) -> None:
    for name in host_state.host_files() - before:
        path = Path(name)
        if path.is_symlink() or path.is_file() or path.is_socket():
            path.unlink(missing_ok=True)
        elif path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


def _remove_host_dirs(before: set[str]) -> None:
    for directory in host_state.HOST_DIRS_CREATED:
        if str(directory) not in before:
            with contextlib.suppress(OSError):
                directory.rmdir()


def _restore_sysctls(values: dict[str, str]) -> None:
    for key, value in values.items():
        path = Path("/proc/sys") / key
        try:
            if path.read_text().strip() != value:
                path.write_text(value)
        except OSError as error:
            print(f"cluster-down: could not restore {key}={value}: {error}", file=sys.stderr)


class _Steps:
    """Names the steps that take long (on stdout), so a slow teardown says where it waits."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def done(self, step: str) -> None:
        now = time.monotonic()
        if now - self.last > 2:
            print(f"cluster-down: {step} took {now - self.last:.1f} s")
        self.last = now


def down() -> None:
    before = host_state.recorded() or {}
    steps = _Steps()
    for name in DAEMONS:
        processes.stop(name, grace=GRACE.get(name, 10.0))
        steps.done(f"stopping {name}")
    _kill_pod_processes()
    if processes.running("containerd"):
        _remove_containers()
    processes.stop("containerd")
    processes.stop("registry")
    _kill_leftovers()
    steps.done("stopping containers, containerd and the registry")
    _unmount()
    _remove_netns(set(before.get("netns", [])))
    _remove_links()
    steps.done("unmounting, removing network namespaces and links")
    _remove_chains("iptables", set(before.get("iptables", [])))
    _remove_chains("ip6tables", set(before.get("ip6tables", [])))
    steps.done("removing iptables chains")
    _remove_cgroups()
    steps.done("removing cgroups")
    _remove_host_files(set(before.get("files", [])))
    if before:
        _remove_host_dirs(set(before.get("dirs", [])))
    _restore_sysctls(before.get("sysctls", {}))
    shutil.rmtree(layout.STATE, ignore_errors=True)


def main() -> None:
    started = time.monotonic()
    down()
    print(f"cluster-down: done in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
