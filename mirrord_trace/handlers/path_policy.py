"""Which paths are local, remote, or not found: mirrord's fs modes and override patterns."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

# Paths a program never finds, whatever the mode: credentials of the developer's own machine
# that would otherwise leak into (or confuse) a program pretending to run in the pod.
DEFAULT_NOT_FOUND = (
    r"^{home}/\.kube(/|$)",
    r"^{home}/\.config/gcloud(/|$)",
    r"^{home}/\.azure(/|$)",
)


def _combined(patterns: Iterable[str]) -> re.Pattern[str] | None:
    listed = list(patterns)
    return re.compile("|".join(f"(?:{p})" for p in listed)) if listed else None


class TargetlessPolicy:
    """No target: every path is local except the not-found ones."""

    def __init__(self, not_found: Iterable[str | re.Pattern[str]] = ()) -> None:
        home = re.escape(os.path.expanduser("~"))
        defaults = [p.replace("{home}", home) for p in DEFAULT_NOT_FOUND]
        users = [p.pattern if isinstance(p, re.Pattern) else p for p in not_found]
        self._not_found = _combined([*users, *defaults])

    def decide(self, path: str) -> tuple[str, str]:
        if self._not_found is not None and self._not_found.search(path):
            return "not_found", "not_found pattern"
        return "local", "no target: everything else is local"
