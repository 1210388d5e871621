"""The image's base: a Debian root filesystem made by debootstrap from Debian's packages, with
what the agent runs on and nothing else, cached so that only the first build downloads.

    base = base_rootfs(cache_dir, mirror, progress)   # cache_dir/rootfs-<key>, built once

The cache key covers everything that decides the tree (suite, packages, architecture, the
slimming below); a build that fails half way leaves only a temporary directory, removed next
time. The downloaded .deb files stay in cache_dir/debs, so a changed package list downloads
only what is new.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# What the agent needs at run time, as Debian packages (debootstrap adds their dependencies,
# not their recommendations):
# - python3: the agent is `python3 -m agent` (Debian 12: Python 3.11, as the local side's).
# - python3-msgpack: the wire protocol's framing. python3-click: the agent's command line.
# - python3-scapy: builds and parses the DNS messages of the agent's resolver.
# - python3-ptrace: its syscall-number table, read by the BPF assembler package (seccomp) that
#   the agent's packet-capture filter is assembled with.
# - iptables: the redirect rules of stealing (the nft backend, Debian's default, as kube-proxy
#   and today's nodes use); iproute2: `ip`/`ss`, for looking into a target's network namespace
#   from `kubectl exec` into the agent; conntrack: cuts connections opened before a steal
#   (agent.flush_connections).
# The agent's pure-PyPI dependencies (HTTP/2, httptools, JSONPath) are in its own layer
# (agent_tree.py).
PACKAGES = (
    "python3",
    "python3-msgpack",
    "python3-click",
    "python3-scapy",
    "python3-ptrace",
    "iptables",
    "iproute2",
    "conntrack",
)
# Removed from the tree: manuals, translations, apt's package lists and caches, logs, and
# the documentation except each package's copyright file (the image is redistributed). Also
# what Python and the agent never load: glibc's iconv modules (gconv; Python has its own
# codecs), scapy's contrib protocols (loaded only by load_contrib; the agent uses scapy's DNS
# layer) and pydoc's topic index. Together about 40% of a minbase tree with these packages.
SLIM_PATHS = (
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/lintian",
    "var/lib/apt/lists",
    "var/cache/apt",
    "var/cache/debconf/templates.dat-old",
    "var/log",
    "usr/lib/*/gconv",
    "usr/lib/python3/dist-packages/scapy/contrib",
    "usr/lib/python3.*/pydoc_data",
)
# Bumped when the slimming or the layout of the tree changes, so old caches are not reused.
_TREE_VERSION = "2"
_DEBIAN_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
# Where the agent's sources go (an empty directory in the base, filled by the agent layer).
AGENT_DIR = "opt/mirrord-trace"


class RootfsError(Exception):
    """The root filesystem cannot be built; the message says why, the hint what to do."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


@dataclass(frozen=True, slots=True)
class BaseRootfs:
    path: Path
    architecture: str  # Debian's (= Go's, for amd64 and arm64) name
    created: int  # when it was built: the clamp for the layer's mtimes


def debian_architecture() -> str:
    machine = platform.machine()
    if machine not in _DEBIAN_ARCH:
        raise RootfsError(
            f"no agent image for this machine's architecture ({machine})",
            "build on an amd64 or arm64 Linux machine",
        )
    return _DEBIAN_ARCH[machine]


def cache_key(architecture: str) -> str:
    text = "\n".join((SUITE, architecture, _TREE_VERSION, *PACKAGES, *SLIM_PATHS))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _check_can_build() -> None:
    if os.geteuid() != 0:
        raise RootfsError(
            "building the agent image's root filesystem needs root (debootstrap, chroot)",
            "run it with sudo, or use agent/Containerfile with docker/podman build",
        )
    if shutil.which("debootstrap") is None:
        raise RootfsError(
            "debootstrap is not installed",
            "install it (Debian/Ubuntu: apt-get install debootstrap debian-archive-keyring)",
        )


def _slim(root: Path) -> None:
    for pattern in SLIM_PATHS:
        for path in root.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
                path.mkdir(mode=0o755)
            else:
                path.unlink()
    for path in (root / "usr/share/doc").glob("**/*"):
        if path.name != "copyright" and (path.is_symlink() or path.is_file()):
            path.unlink()
    # apt expects its list and cache directories to exist (for `apt-get update` in the pod).
    for relative in ("var/lib/apt/lists/partial", "var/cache/apt/archives/partial"):
        (root / relative).mkdir(parents=True, exist_ok=True)
    (root / AGENT_DIR).mkdir(parents=True, exist_ok=True)


def _remove_stale(cache_dir: Path, current: str) -> None:
    """Trees (and their layers) of older package lists: nothing will use them again."""
    prefix = current.rsplit("-", 1)[0] + "-"
    for path in cache_dir.glob(f"{prefix}*"):
        if path.name.split(".", 1)[0] == current:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def base_rootfs(cache_dir: Path, mirror: str, progress: Callable[[str], None]) -> BaseRootfs:
    """The cached base tree, built with debootstrap if it is not there yet."""
    architecture = debian_architecture()
    cache_dir = cache_dir.resolve()
    final = cache_dir / f"rootfs-{architecture}-{cache_key(architecture)}"
    stamp = final.with_name(final.name + ".built")  # next to the tree: not in the image
    if stamp.is_file():
        return BaseRootfs(final, architecture, int(stamp.read_text().strip()))
    _check_can_build()
    debs = cache_dir / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    partial = final.with_name(final.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    progress(f"debootstrap {SUITE} ({architecture}) from {mirror} into {partial}")
    command = [
        "debootstrap",
        "--variant=minbase",
        f"--arch={architecture}",
        f"--include={','.join(PACKAGES)}",
        f"--cache-dir={debs}",
        SUITE,
        str(partial),
        mirror,
    ]
    # debootstrap takes minutes: its own progress lines ("I: Retrieving ...") are shown.
    lines: list[str] = []
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip())
            if line.startswith(("I: Retrieving InRelease", "I: Installing", "I: Base system")):
                progress(f"debootstrap: {line.strip()}")
    if process.returncode != 0:
        log = partial / "debootstrap" / "debootstrap.log"
        tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
        last = " | ".join([*lines[-2:], *tail])
        raise RootfsError(
            f"debootstrap failed (exit status {process.returncode}): {last}",
            f"check that {mirror} is reachable, or give another Debian mirror with --mirror",
        )
    _slim(partial)
    created = int(time.time())
    if final.exists():
        shutil.rmtree(final)
    partial.rename(final)
    stamp.write_text(f"{created}\n")
    _remove_stale(cache_dir, final.name)
    return BaseRootfs(final, architecture, created)
