"""Everything a sandbox's name decides: interface names, addresses, paths.

A sandbox is identified by its name plus a small index (1..254) chosen when it is created; the
index picks the address blocks so that several sandboxes can coexist on one machine.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_NAME = "mtsandbox"
SANDBOX_BASE = Path("/run/mirrord-trace/sandbox")
NETNS_RUN_DIR = Path("/run/netns")

# Both /16 blocks are only ever used by our own namespaces: the host gets a /30 route to the veth
# and an explicit "unreachable" route for the service block, so cluster-only addresses fail fast.
LINK_BLOCK = ipaddress.IPv4Network("10.213.0.0/16")
SERVICE_BLOCK = ipaddress.IPv4Network("10.214.0.0/16")
MAX_INDEX = 254

POD_HOSTNAME = "app-7f9c"
POD_VETH = "eth0"
APP_PORT = 8080
SERVICE_PORT = 80
ECHO_PORT = 7
DNS_PORT = 53
SEARCH_DOMAINS = ("default.svc.cluster.local", "svc.cluster.local", "cluster.local")

_NAME_PATTERN = re.compile(r"[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?")


class InvalidSandboxName(ValueError):
    """The sandbox name cannot be used for namespaces, links and paths."""


def validate_name(name: str) -> str:
    if not _NAME_PATTERN.fullmatch(name):
        raise InvalidSandboxName(
            f"invalid sandbox name {name!r}: use 1-32 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit"
        )
    return name


def preferred_index(name: str) -> int:
    """A stable first guess for the index, so a name tends to keep its addresses across runs."""
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[:4], "big") % MAX_INDEX + 1


def _name_digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:8]


def host_veth_name(name: str) -> str:
    # IFNAMSIZ allows 15 characters; a digest keeps long sandbox names within it.
    return f"mt{_name_digest(name)}h"


def peer_veth_name(name: str) -> str:
    """The pod end's name while it is still in the host namespace (renamed to eth0 inside)."""
    return f"mt{_name_digest(name)}p"


def netns_name(name: str) -> str:
    return f"mirrord-trace-{name}"


def state_dir(name: str) -> Path:
    return SANDBOX_BASE / name


@dataclass(frozen=True)
class SandboxPlan:
    name: str
    index: int

    @property
    def netns(self) -> str:
        return netns_name(self.name)

    @property
    def netns_path(self) -> Path:
        return NETNS_RUN_DIR / self.netns

    @property
    def host_veth(self) -> str:
        return host_veth_name(self.name)

    @property
    def peer_veth(self) -> str:
        return peer_veth_name(self.name)

    @property
    def link_network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network((LINK_BLOCK.network_address + 256 * self.index, 30))

    @property
    def host_addr(self) -> str:
        return str(self.link_network.network_address + 1)

    @property
    def target_addr(self) -> str:
        return str(self.link_network.network_address + 2)

    @property
    def service_network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network((SERVICE_BLOCK.network_address + 256 * self.index, 24))

    @property
    def dns_addr(self) -> str:
        return str(self.service_network.network_address + 10)

    @property
    def service_addr(self) -> str:
        return str(self.service_network.network_address + 20)

    @property
    def state_dir(self) -> Path:
        return state_dir(self.name)

    @property
    def root(self) -> Path:
        return self.state_dir / "root"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"
