"""SandboxInfo: what a running sandbox looks like to its users (tests, demo, benchmarks)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_PATH_FIELDS = ("root", "state_dir", "logs_dir", "dns_log")


@dataclass
class SandboxInfo:
    name: str
    # Picks the sandbox's address blocks (10.213.<index>.0/30, 10.214.<index>.0/24).
    index: int
    netns: str
    netns_path: str
    root: Path
    state_dir: Path
    logs_dir: Path
    host_veth: str
    pod_veth: str
    host_addr: str
    target_addr: str
    link_prefixlen: int
    app_port: int
    dns_addr: str
    dns_port: int
    dns_log: Path
    service_addr: str
    service_port: int
    echo_port: int
    # Cluster DNS names answered by the pod's DNS server only, name -> address.
    names: dict[str, str]
    # Names with several A records (like a headless service), name -> addresses in record order.
    multi_names: dict[str, list[str]]
    txt_records: dict[str, str]
    # Names only the pod's /etc/hosts knows, name -> address.
    hosts_entries: dict[str, str]
    search_domains: list[str]
    hostname: str
    app_secret: str
    # The target's whole environment, read from /proc/<target>/environ once it was up: the
    # pod's variables plus what its entrypoint shell adds (PWD, SHLVL).
    env: dict[str, str]
    # Small text files in the pod, pod path -> content.
    files: dict[str, str]
    # Symlinks in the pod, pod path -> link text (relative or absolute inside the pod).
    symlinks: dict[str, str]
    large_file: str
    large_file_size: int
    large_file_sha256: str
    service_body: str
    app_body: str
    # Role ("dns", "service", "target") -> pid; filled in while the sandbox is being built.
    pids: dict[str, int] = field(default_factory=dict)
    # "building" until every part answers, then "up".
    phase: str = "building"
    # Computed by status() when it is called, never persisted: what is wrong with the sandbox.
    problems: list[str] = field(default_factory=list)

    @property
    def target_pid(self) -> int:
        return self.pids.get("target", 0)

    @property
    def healthy(self) -> bool:
        return self.phase == "up" and not self.problems

    @property
    def app_url(self) -> str:
        return f"http://{self.target_addr}:{self.app_port}/"

    def pod_path(self, path: str) -> Path:
        """Where a path inside the pod lives on the host (no symlink resolution)."""
        return self.root / path.lstrip("/")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for name in _PATH_FIELDS:
            data[name] = str(data[name])
        data["target_pid"] = self.target_pid
        data["healthy"] = self.healthy
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SandboxInfo:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        for name in _PATH_FIELDS:
            values[name] = Path(values[name])
        return cls(**values)

    def persisted(self) -> dict[str, Any]:
        """The dict written to state.json: live fields (problems, healthy) left out."""
        data = self.to_dict()
        for live in ("problems", "healthy", "target_pid"):
            data.pop(live)
        return data
