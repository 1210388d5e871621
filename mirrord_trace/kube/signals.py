"""Signals during a Kubernetes session: the agent must be removed however the session ends.

- During start-up, SIGTERM and SIGHUP interrupt like Ctrl-C (KeyboardInterrupt), so the
  clean-up runs instead of the process dying with the agent left behind.
- While the agent is removed, those signals are ignored: a second Ctrl-C must not cut it short.
- Helper threads never take them (see threads_spared_termination_signals).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from mirrord_trace.signal_mask import helper_threads_spared, termination_interrupts

_TERMINATION_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
__all__ = ["termination_deferred", "termination_interrupts", "threads_spared_termination_signals"]


# The session's I/O thread and the port-forward's proxy thread must not take Ctrl-C either.
threads_spared_termination_signals = helper_threads_spared


@contextmanager
def termination_deferred() -> Iterator[None]:
    """Ctrl-C (or SIGTERM/SIGHUP) while the agent is being removed is ignored: we are already
    stopping, and an interrupted removal would leave the agent behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    ignored = (signal.SIGINT, *_TERMINATION_SIGNALS)
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in ignored}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
