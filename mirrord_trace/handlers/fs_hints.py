"""Saying so when a path the program wanted was looked up in the target, is not there, but
exists on this machine: the commonest surprise of a remote filesystem ("does not exist", and
nothing says mirrord-trace was involved).

Not for the default remote files (the pod's on purpose). Checked only after the target said
ENOENT (a failure path that already cost an agent round trip; the check is one lstat of the
supervisor's own), printed once per directory and at most MAX_LINES times a session; --trace
says it at every such call.
"""

from __future__ import annotations

import os
import sys

MAX_LINES = 8


def _advice(rule: str) -> str:
    if rule.startswith(("user read_only", "user read_write")):
        return "change that feature.fs pattern to read it here"
    return "to read it here, add a pattern for it to feature.fs.local"


class ExistsHere:
    """The hint for ENOENT from the target on a path this machine has."""

    def __init__(self, max_lines: int = MAX_LINES) -> None:
        self._told: set[str] = set()  # directories already named on stderr
        self._max_lines = max_lines

    def why(self, path: str, rule: str) -> str:
        """Words for --trace (empty when the path is not here either); prints the line."""
        if rule.startswith("default remote") or not os.path.lexists(path):
            # The default remote files (resolv.conf, hosts, certificates) are the pod's on
            # purpose: this machine having one the pod lacks is no surprise worth a line.
            return ""
        advice = _advice(rule)
        directory = os.path.dirname(os.path.normpath(path))
        if directory not in self._told and len(self._told) < self._max_lines:
            self._told.add(directory)
            more = "" if len(self._told) < self._max_lines else " (further hints: --trace)"
            print(
                f"mirrord-trace: {path} was looked up in the target (remote: {rule}) and is not "
                f"there, but it exists on this machine; {advice}{more}",
                file=sys.stderr,
                flush=True,
            )
        return f"; not in the target but on this machine: {advice}"
