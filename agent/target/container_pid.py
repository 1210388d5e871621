"""Find a container's main process from its container id, by scanning /proc/*/cgroup.

Kubernetes reports a container as `<runtime>://<64 hex digits>` in the pod status. Every
runtime (containerd, CRI-O, Docker, with the systemd or the cgroupfs driver, cgroup v1 or v2)
puts the container's processes in a cgroup whose path contains that id, e.g.

    0::/kubepods.slice/kubepods-besteffort.slice/.../cri-containerd-<id>.scope
    4:memory:/kubepods/besteffort/pod<uid>/<id>
    0::/../../crio-<id>.scope            (read from inside another cgroup namespace)

so matching the id in the cgroup paths works whatever the runtime, without talking to it.
The agent pod uses hostPID, so /proc shows every process of the node.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_CONTAINER_ID = re.compile(r"[0-9a-f]{64}")
_RUNTIME_PREFIX = re.compile(r"[a-z][a-z0-9+.-]*://")


class ContainerNotFound(Exception):
    """No process on this node belongs to the container; the message says what to check."""


def parse_container_id(raw: str) -> str:
    """`containerd://<id>`, `cri-o://<id>`, `docker://<id>` or a bare id -> the 64 hex digits."""
    text = raw.strip()
    prefix = _RUNTIME_PREFIX.match(text)
    bare = text[prefix.end() :] if prefix else text
    if not _CONTAINER_ID.fullmatch(bare):
        raise ValueError(
            f"{raw!r} is not a container id (64 hex digits, optionally after "
            "'containerd://', 'cri-o://' or 'docker://', as in the pod status)"
        )
    return bare


def _cgroup_paths(pid_dir: Path) -> list[str]:
    # Lines are "hierarchy-id:controllers:path"; the path may itself contain ':'.
    return [line.split(":", 2)[2] for line in (pid_dir / "cgroup").read_text().splitlines()]


@dataclass(frozen=True)
class ProcessInfo:
    parent: int
    # Clock ticks after boot: orders processes by age even when pids have wrapped around.
    start_time: int


def _process_info(pid_dir: Path) -> ProcessInfo:
    stat = (pid_dir / "stat").read_text()
    # The command name may contain spaces and parentheses: the fields follow its last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return ProcessInfo(parent=int(fields[1]), start_time=int(fields[19]))


def container_processes(container_id: str, proc: Path = Path("/proc")) -> dict[int, ProcessInfo]:
    """pid -> parent and start time of every process whose cgroup path names the container."""
    needle = re.compile(rf"(?<![0-9a-f]){parse_container_id(container_id)}(?![0-9a-f])")
    members: dict[int, ProcessInfo] = {}
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            if any(needle.search(path) for path in _cgroup_paths(pid_dir)):
                members[int(pid_dir.name)] = _process_info(pid_dir)
        except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
            continue  # the process ended while we looked at it
    return members


def find_container_pid(container_id: str, proc: Path = Path("/proc")) -> int:
    """The container's main process: the one whose parent is outside the container (its init;
    the runtime's shim is the parent). Several such (processes moved in from outside): the
    oldest."""
    members = container_processes(container_id, proc)
    roots = [pid for pid, info in members.items() if info.parent not in members]
    if not roots:
        raise ContainerNotFound(
            f"no process on this node belongs to container {parse_container_id(container_id)}: "
            "the agent must run on the pod's node with hostPID (or as an ephemeral container "
            "targeting it), and the container must be running"
        )
    return min(roots, key=lambda pid: (members[pid].start_time, pid))
