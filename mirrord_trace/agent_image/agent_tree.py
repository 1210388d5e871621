"""The image's second layer: the agent's Python sources under /opt/mirrord-trace, compiled by
the image's own interpreter.

The whole `agent`, `seccomp` and `mirrord_trace` packages go in, from wherever this
installation of mirrord-trace has them (a checkout or a wheel): the agent imports the wire
protocol and the BPF assembler from the other two, and a copy of whole packages stays right
when modules move between them. The local side's own dependencies (kubernetes, python-ptrace)
are not in the image; the agent never imports the modules that need them.

The agent's dependencies that Debian does not package (or packages too old) come from this
installation too: the very versions the local side was tested with, with what they require.
Compiled ones are CPython 3.11 manylinux builds, the ABI of the image's Debian python3.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

from mirrord_trace.agent_image.rootfs import AGENT_DIR, RootfsError

PACKAGES = ("agent", "seccomp", "mirrord_trace")
# The agent's HTTP filtering: HTTP/2 (h2 and what it requires), HTTP/1.x (httptools) and
# JSON body queries (jsonpath-rfc9535, with regex and iregexp-check).
DISTRIBUTIONS = ("h2", "httptools", "jsonpath-rfc9535")
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


def requirement_closure(names: tuple[str, ...]) -> list[importlib.metadata.Distribution]:
    """The installed distributions `names` and everything they require (extras left out)."""
    found: dict[str, importlib.metadata.Distribution] = {}
    pending = list(names)
    while pending:
        name = re.sub(r"[-_.]+", "-", pending.pop()).lower()
        if name in found:
            continue
        try:
            found[name] = distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            raise RootfsError(
                f"the agent needs the Python package {name}, which is not installed here",
                "reinstall mirrord-trace with its dependencies (pip install mirrord-trace)",
            ) from None
        for requirement in distribution.requires or ():
            if "extra ==" not in requirement:
                pending.append(re.split(r"[\s;<>=!~\[(]", requirement, maxsplit=1)[0])
    return list(found.values())


def copy_distributions(names: tuple[str, ...], target: Path) -> None:
    """Copy each distribution's installed files (sources, compiled modules, metadata) from
    this environment's site-packages to `target`, keeping their relative paths."""
    for distribution in requirement_closure(names):
        for file in distribution.files or ():
            relative = Path(str(file))
            if relative.is_absolute() or ".." in relative.parts or relative.suffix == ".pyc":
                continue  # scripts installed elsewhere, byte code compiled again below
            source = Path(str(distribution.locate_file(file)))
            if source.is_file():
                (target / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target / relative)


def stage_agent(stage: Path, base: Path) -> Path:
    """Copy the packages into stage/opt/mirrord-trace and byte-compile them there with the
    base tree's python3 (chroot; the stage is bind-mounted over the base's empty directory in
    a private mount namespace, so the cached base stays untouched and no mount outlives this).
    Hash-based .pyc files: their validity does not depend on the files' mtimes."""
    target = stage / AGENT_DIR
    target.mkdir(parents=True)
    for name in PACKAGES:
        shutil.copytree(package_dir(name), target / name, ignore=_LEFT_OUT)
    copy_distributions(DISTRIBUTIONS, target)
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
