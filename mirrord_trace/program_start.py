"""The last steps of starting the program, shared by both engines' forked children.

Runs between fork and exec, where as little as possible may happen: no allocation-heavy Python,
no locks another thread might hold.
"""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import Mapping, Sequence


def restore_program_signals(original_mask: set[signal.Signals]) -> None:
    """The program starts with the caller's signal mask and the default actions of the
    signals Python ignores (SIGPIPE, SIGXFSZ)."""
    signal.pthread_sigmask(signal.SIG_SETMASK, original_mask)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)


def exec_program(path: str, argv: Sequence[str], env: Mapping[str, str]) -> None:
    """execve, or, for a file with no #! line that is no binary either, /bin/sh running it,
    as execvp(3) and every shell do. Raises OSError when neither can run."""
    try:
        os.execve(path, argv, env)
    except OSError as exc:
        if exc.errno != errno.ENOEXEC:
            raise
        os.execve("/bin/sh", ["/bin/sh", path, *argv[1:]], env)
