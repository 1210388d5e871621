"""Real cgroups laid out the way container runtimes lay them out, for processes of this machine.

A kubelet's runtime puts each container's processes in a cgroup named after the container id;
the agent finds a container's pid by looking for that id in /proc/*/cgroup. These helpers do
what the runtime would, on this machine's real cgroup hierarchies, and undo it completely:

    with ContainerCgroup(container_id, "containerd-systemd") as cgroup:
        cgroup.add(pid)      # pid (and whatever it forks from now on) is "in the container"

Every directory is made under a per-session top directory (`mtt-kube-<pytest pid>-<n>`), so
parallel sessions never collide and a killed session's leftovers are recognisable.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

_TOP_PREFIX = "mtt-kube-"
_numbers = itertools.count(1)

# layout -> (hierarchy kind, path template below the top directory). The templates are what
# the runtimes create: systemd driver (cgroup v2) or cgroupfs driver (here on a v1 hierarchy).
LAYOUTS = {
    "containerd-systemd": (
        "cgroup2",
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{pod}.slice/"
        "cri-containerd-{id}.scope",
    ),
    "crio-systemd": (
        "cgroup2",
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{pod}.slice/crio-{id}.scope",
    ),
    "docker-systemd": ("cgroup2", "system.slice/docker-{id}.scope"),
    "cgroupfs-v1": ("cgroup", "kubepods/besteffort/pod{pod}/{id}"),
}


class NoWritableCgroups(Exception):
    """This machine has no writable cgroup hierarchy of the kind a layout needs."""


@dataclass(frozen=True)
class Hierarchy:
    mount_point: Path
    # v1: the controllers (or name=...) it was mounted with; None for the v2 hierarchy.
    controllers: frozenset[str] | None

    def path_of(self, pid: int) -> str | None:
        """pid's cgroup path in this hierarchy (None if the process has ended)."""
        try:
            lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        except (FileNotFoundError, ProcessLookupError):
            return None
        for line in lines:
            hierarchy_id, controllers, path = line.split(":", 2)
            if self.controllers is None and hierarchy_id == "0":
                return path
            if self.controllers is not None and set(controllers.split(",")) <= self.controllers:
                return path
        return None

    def directory(self, path: str) -> Path:
        return self.mount_point / path.lstrip("/")


def hierarchy(kind: str) -> Hierarchy:
    """A writable mount of the cgroup v2 ("cgroup2") or of a v1 ("cgroup") hierarchy."""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, mount_point, fs_type, options, *_ = line.split()
        option_set = frozenset(options.split(","))
        if fs_type != kind or "rw" not in option_set:
            continue
        if os.access(Path(mount_point) / "cgroup.procs", os.W_OK):
            return Hierarchy(Path(mount_point), None if kind == "cgroup2" else option_set)
    raise NoWritableCgroups(f"no writable {kind} hierarchy is mounted")


def _move(pid: int, cgroup_dir: Path) -> None:
    with contextlib.suppress(ProcessLookupError):
        (cgroup_dir / "cgroup.procs").write_text(f"{pid}\n")


def _procs(cgroup_dir: Path) -> list[int]:
    try:
        return [int(line) for line in (cgroup_dir / "cgroup.procs").read_text().split()]
    except FileNotFoundError:
        return []


@dataclass
class ContainerCgroup:
    container_id: str
    layout: str = "containerd-systemd"
    pod_uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    leaf: Path | None = None
    _hierarchy: Hierarchy | None = None
    _top: Path | None = None
    _homes: dict[int, Path] = field(default_factory=dict)

    def __enter__(self) -> ContainerCgroup:
        kind, template = LAYOUTS[self.layout]
        self._hierarchy = hierarchy(kind)
        mount_point = self._hierarchy.mount_point
        remove_abandoned(mount_point)
        self._top = mount_point / f"{_TOP_PREFIX}{os.getpid()}-{next(_numbers)}"
        pod = self.pod_uid.replace("-", "_") if "systemd" in self.layout else self.pod_uid
        self.leaf = self._top / template.format(pod=pod, id=self.container_id)
        self.leaf.mkdir(parents=True)
        return self

    def add(self, pid: int) -> None:
        """Move pid into the container's cgroup; it goes back where it was on exit."""
        assert self.leaf is not None and self._hierarchy is not None
        self._homes[pid] = self._hierarchy.directory(self._hierarchy.path_of(pid) or "/")
        _move(pid, self.leaf)

    def __exit__(self, *exc_info: object) -> None:
        if self._top is None or self.leaf is None:
            return
        mount_point = self._top.parent
        fallback = next(iter(self._homes.values()), mount_point)
        for pid in _procs(self.leaf):
            _move(pid, self._homes.get(pid, fallback))
        _remove_tree(self._top)
        self._top = None


def _remove_tree(top: Path) -> None:
    """rmdir every cgroup under top, deepest first (cgroups are removed with rmdir only)."""
    directories = sorted(
        (path for path in top.rglob("*") if path.is_dir()), key=lambda p: len(p.parts)
    )
    for directory in [*reversed(directories), top]:
        for _ in range(50):  # a process that just exited may still be counted for a moment
            try:
                directory.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                for pid in _procs(directory):
                    _move(pid, top.parent)
                time.sleep(0.02)


def remove_abandoned(mount_point: Path) -> list[Path]:
    """Remove top directories of earlier sessions whose pytest process is gone."""
    removed = []
    for top in mount_point.glob(f"{_TOP_PREFIX}*"):
        owner = top.name.removeprefix(_TOP_PREFIX).split("-")[0]
        if owner.isdigit() and int(owner) != os.getpid() and not Path(f"/proc/{owner}").exists():
            _remove_tree(top)
            removed.append(top)
    return removed
