"""The image's second layer: the agent's Python sources under /opt/mirrord-trace, compiled by
the image's own interpreter.

The whole `agent`, `seccomp` and `mirrord_trace` packages go in, from wherever this
installation of mirrord-trace has them (a checkout or a wheel): the agent imports the wire
protocol and the BPF assembler from the other two, and a copy of whole packages stays right
when modules move between them. The local side's own dependencies (kubernetes, python-ptrace)
are not in the image; the agent never imports the modules that need them.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

from mirrord_trace.agent_image.rootfs import AGENT_DIR, RootfsError

PACKAGES = ("agent", "seccomp", "mirrord_trace")
# Build recipes for other builders, not sources.
_LEFT_OUT = shutil.ignore_patterns("__pycache__", "*.pyc", "Containerfile")


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RootfsError(
            f"the '{name}' package of mirrord-trace is not installed",
            "reinstall mirrord-trace (pip install mirrord-trace) and build again",
        )
    return Path(next(iter(spec.submodule_search_locations)))


def stage_agent(stage: Path, base: Path) -> Path:
    """Copy the packages into stage/opt/mirrord-trace and byte-compile them there with the
    base tree's python3 (chroot; the stage is bind-mounted over the base's empty directory in
    a private mount namespace, so the cached base stays untouched and no mount outlives this).
    Hash-based .pyc files: their validity does not depend on the files' mtimes."""
    target = stage / AGENT_DIR
    target.mkdir(parents=True)
    for name in PACKAGES:
        shutil.copytree(package_dir(name), target / name, ignore=_LEFT_OUT)
    script = (
        'mount --bind "$1" "$2/$3" && exec chroot "$2" /usr/bin/python3 -m compileall -q '
        '--invalidation-mode unchecked-hash "/$3"'
    )
    result = subprocess.run(
        [
            *("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"),
            *(str(target), str(base), AGENT_DIR),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RootfsError(
            "compiling the agent's sources in the image failed: "
            + " | ".join(result.stderr.strip().splitlines()[-3:]),
            "remove the build cache directory and build again",
        )
    return target
