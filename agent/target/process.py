"""What the agent reads about the target process from /proc: environment and credentials."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass


class TargetGone(OSError):
    def __init__(self, pid: int) -> None:
        super().__init__(errno.ESRCH, f"the target process {pid} has exited")


def read_environment(pid: int) -> dict[str, str]:
    """The target's environment as it was at exec, names and values fsdecoded."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as environ:
            raw = environ.read()
    except (FileNotFoundError, ProcessLookupError):
        raise TargetGone(pid) from None
    env: dict[str, str] = {}
    for entry in raw.split(b"\0"):
        name, separator, value = entry.partition(b"=")
        if separator and name:
            env[os.fsdecode(name)] = os.fsdecode(value)
    return env


@dataclass(frozen=True)
class Credentials:
    uid: int
    gid: int
    groups: frozenset[int]


def read_credentials(pid: int) -> Credentials:
    """The target's real uid/gid and supplementary groups (what access(2) checks against)."""
    fields: dict[str, list[str]] = {}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                key, _, rest = line.partition(":")
                if key in ("Uid", "Gid", "Groups"):
                    fields[key] = rest.split()
    except (FileNotFoundError, ProcessLookupError):
        raise TargetGone(pid) from None
    return Credentials(
        uid=int(fields["Uid"][0]),
        gid=int(fields["Gid"][0]),
        groups=frozenset(int(group) for group in fields.get("Groups", [])),
    )
