"""Removes the session's local copies of remote files when the supervisor is gone, however.

The copies are the target's files; they must not outlive the session, not even when the
supervisor is killed with SIGKILL (then no Python code of ours runs). A reaper is a plain
`/bin/sh` started in a session of its own, blind to terminal signals, that blocks reading a
pipe whose only write end the supervisor holds (close-on-exec, so no program inherits it). The
kernel closes that end when the supervisor exits for any reason; the read then returns and the
reaper removes the directories it was told of, then exits. One reaper serves a session.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

# Reads directory names (one per line) until end of file, then removes them all. `read -r`
# fails at end of file: that is the supervisor gone (or done).
_SCRIPT = """
trap '' INT TERM HUP QUIT TSTP TTIN TTOU
set --
while IFS= read -r dir; do set -- "$@" "$dir"; done
[ "$#" -gt 0 ] && rm -rf -- "$@"
exit 0
"""


class Reaper:
    def __init__(self) -> None:
        read_end, self._write_end = os.pipe2(os.O_CLOEXEC)
        try:
            self._process = subprocess.Popen(
                ["/bin/sh", "-c", _SCRIPT],
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C and a closing terminal are not for it
                close_fds=True,
            )
        finally:
            os.close(read_end)

    def watch(self, directory: Path) -> None:
        """Remove `directory` when the supervisor is gone (its name may hold no newline)."""
        # A reaper someone killed cannot be told; the normal end of the session still removes
        # the directory, only a SIGKILLed supervisor would leave it to the next session.
        with contextlib.suppress(BrokenPipeError):
            os.write(self._write_end, f"{directory}\n".encode())

    def close(self) -> None:
        """The session ended normally: the reaper removes what is left and exits now."""
        with contextlib.suppress(OSError):
            os.close(self._write_end)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=5)
