"""Sandbox state on disk, so `status` and `down` work from any process.

/run/mirrord-trace/sandbox/<name>/state.json is written before anything else is built and
removed after everything else is gone: if any part of a sandbox exists, its state file does.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mirrord_trace.sandbox.errors import SandboxError
from mirrord_trace.sandbox.info import SandboxInfo
from mirrord_trace.sandbox.plan import SANDBOX_BASE, state_dir

_LOCK_FILE = SANDBOX_BASE / ".lock"


@contextmanager
def exclusive_lock() -> Iterator[None]:
    """Serialises up/down across processes (index allocation reads every other state)."""
    SANDBOX_BASE.mkdir(parents=True, exist_ok=True)
    with _LOCK_FILE.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def state_file(name: str) -> Path:
    return state_dir(name) / "state.json"


def load(name: str) -> SandboxInfo | None:
    path = state_file(name)
    try:
        data = json.loads(path.read_text())
        return SandboxInfo.from_dict(data)
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as error:
        raise SandboxError(
            f"state file {path} is unreadable ({error}); "
            f"remove the sandbox with: mirrord-trace sandbox down --name {name}"
        ) from error


def save(info: SandboxInfo) -> None:
    path = state_file(info.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(info.persisted(), indent=2, sort_keys=True) + "\n")
    os.replace(temporary, path)  # readers never see a half-written file


def remove(name: str) -> None:
    state_file(name).unlink(missing_ok=True)


def names_with_state() -> list[str]:
    if not SANDBOX_BASE.is_dir():
        return []
    return sorted(entry.name for entry in SANDBOX_BASE.iterdir() if (entry / "state.json").exists())


def indexes_in_use(except_name: str) -> set[int]:
    used: set[int] = set()
    for name in names_with_state():
        if name == except_name:
            continue
        try:
            info = load(name)
        except SandboxError:
            continue  # an unreadable state keeps no claim it can prove
        if info is not None:
            used.add(info.index)
    return used
