"""Where `--trace` lines go: written by a thread of their own, so the trace never stops the program.

The tracer and the notification thread hand each line over and go on at once. A reader that
goes away (`--trace - ... 2>&1 | head`) ends the trace, not the session: the program keeps
running and meets the closed pipe itself, as it would natively. A reader slower than the
program costs memory up to a bound, then lines are counted instead of kept, and the trace says
how many it lost, where they would have been.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections import deque
from typing import TextIO

from mirrord_trace.signal_mask import helper_threads_spared

# About 20 MB of trace lines waiting for a slow reader; beyond that they are counted.
MAX_PENDING_LINES = 100_000


class TraceSink:
    def __init__(self, stream: TextIO, max_pending: int = MAX_PENDING_LINES) -> None:
        self._stream = stream
        self._max_pending = max_pending
        self._pending: deque[str] = deque()
        self._dropped = 0
        self._closing = False
        self.broken = False
        self._ready = threading.Condition(threading.Lock())
        self._thread = threading.Thread(target=self._write_lines, name="trace", daemon=True)
        with helper_threads_spared():  # a Ctrl-C is for the program, not for this thread
            self._thread.start()

    def write(self, line: str) -> None:
        with self._ready:
            if self.broken or self._closing:
                return
            if len(self._pending) >= self._max_pending:
                self._dropped += 1
                return
            self._pending.append(line)
            self._ready.notify()

    def flush(self) -> None:
        """Lines leave as soon as the writer thread can write them; nothing to do here."""

    def close(self) -> None:
        """Write what is pending (waiting for the reader, as a direct write would), then stop."""
        with self._ready:
            self._closing = True
            self._ready.notify()
        self._thread.join()

    def _write_lines(self) -> None:
        while True:
            with self._ready:
                while not self._pending and not self._closing:
                    self._ready.wait()
                if not self._pending:
                    return
                lines = list(self._pending)
                self._pending.clear()
                if self._dropped:
                    lines.append(
                        f"mirrord-trace: {self._dropped} trace lines dropped here: the trace's"
                        " reader is slower than the program\n"
                    )
                    self._dropped = 0
            try:
                self._stream.write("".join(lines))
                self._stream.flush()
            except (OSError, ValueError):  # EPIPE, or a stream closed under us
                self._stop_broken()
                return

    def _stop_broken(self) -> None:
        with self._ready:
            self.broken = True
            self._pending.clear()
        if self._stream is not sys.stderr:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write(
                    "mirrord-trace: the trace's reader went away; tracing stopped, the program"
                    " goes on\n"
                )
