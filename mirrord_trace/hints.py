"""Hints for mistakes that a first-time user makes, worded where the error is shown.

Kept apart from the code that raises the errors: a hint may ask the agent a question (does the
target have this program?), which the error's own code has no business doing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

# The PATH a target without one gets from most shells and runtimes.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def program_only_in_target(agent: Any, name: str, target_env: Mapping[str, str]) -> str | None:
    """Where the target has `name` (a path, or a bare name looked up in its PATH), or None.

    Only asked when the program was not found on this machine: programs run locally, so a
    binary that exists in the pod alone is a common first surprise.
    """
    if agent is None or not name:
        return None
    if os.path.isabs(name):
        candidates = [name]
    elif "/" in name:  # relative to a working directory the target does not share
        return None
    else:
        path = target_env.get("PATH", DEFAULT_PATH)
        candidates = [os.path.join(d, name) for d in path.split(":") if d.startswith("/")]
    for candidate in candidates:
        try:
            agent.request("fs.stat", path=candidate, follow=True)
        except Exception:  # not there, or the agent cannot say: no hint rather than a wrong one
            continue
        return candidate
    return None


def program_not_found_hint(agent: Any, name: str, target_env: Mapping[str, str]) -> str:
    found = program_only_in_target(agent, name, target_env)
    if found is None:
        return "check the program's name and that it is executable"
    return (
        f"the target has {found}, but mirrord-trace runs programs on this machine: install the "
        "program here (or copy it from the target) and run that"
    )
