"""Which signals reach the traced program, and keeping helper threads from taking them.

A process-directed signal goes to any thread that does not block it. If a helper thread (the
agent connection's I/O, a stderr reader, a port-forward proxy) took a SIGTERM or Ctrl-C meant
for the program, neither the main thread nor the supervisor's forwarder would ever see it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# What the supervisor forwards to the program (and what `docker stop`, `kill` and a terminal send).
FORWARDED_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT})


@contextmanager
def helper_threads_spared() -> Iterator[None]:
    """Threads started in here block the forwarded signals for their whole life.

    New threads inherit the mask of the thread that starts them; the starting thread gets its
    own mask back afterwards, and signals that arrived meanwhile stay pending for it.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextmanager
def termination_interrupts() -> Iterator[None]:
    """During start-up, SIGTERM and SIGHUP end it as Ctrl-C does, so clean-up runs.

    Without this, SIGTERM would kill the CLI with an agent left behind, and as a container's
    PID 1 (where the kernel drops signals whose action is the default) it would be lost.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {
        signum: signal.signal(signum, _raise_interrupt)
        for signum in (signal.SIGTERM, signal.SIGHUP)
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
