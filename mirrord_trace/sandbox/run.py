"""Running commands inside a sandbox: in its network namespace, or inside the target itself."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from typing import Any

from mirrord_trace.sandbox import state
from mirrord_trace.sandbox.errors import SandboxError
from mirrord_trace.sandbox.info import SandboxInfo
from mirrord_trace.sandbox.plan import DEFAULT_NAME, NETNS_RUN_DIR, netns_name, validate_name
from mirrord_trace.sandbox.services import NSENTER


def _name_of(sandbox: str | SandboxInfo) -> str:
    return validate_name(sandbox.name if isinstance(sandbox, SandboxInfo) else sandbox)


def run_in_sandbox_netns(
    argv: Sequence[str], name: str | SandboxInfo = DEFAULT_NAME, **run_options: Any
) -> subprocess.CompletedProcess[Any]:
    """subprocess.run(argv) in the sandbox's network namespace, with the host's filesystem.

    `name` is a sandbox name or its SandboxInfo (e.g. the `sandbox` fixture)."""
    name = _name_of(name)
    netns_path = NETNS_RUN_DIR / netns_name(name)
    if not netns_path.exists():
        raise SandboxError(f"sandbox {name!r} has no network namespace: is it up?")
    return subprocess.run([NSENTER, f"--net={netns_path}", "--", *argv], **run_options)


def run_in_target(
    argv: Sequence[str], name: str | SandboxInfo = DEFAULT_NAME, **run_options: Any
) -> subprocess.CompletedProcess[Any]:
    """subprocess.run(argv) as if inside the target container: its namespaces, root and
    working directory, and (unless `env` is given) its environment."""
    name = _name_of(name)
    info = state.load(name)
    if info is None or not info.target_pid:
        raise SandboxError(f"sandbox {name!r} has no target process: is it up?")
    run_options.setdefault("env", info.env)
    enter = [NSENTER, f"--target={info.target_pid}", "--net", "--mount", "--uts", "--root", "--wd"]
    return subprocess.run([*enter, "--", *argv], **run_options)
