"""Start-up progress on stderr: one line per change of state, so a slow start is visible."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, prefix: str, stream: TextIO | None = None) -> None:
        self.prefix = prefix
        self.stream = stream if stream is not None else sys.stderr
        self.started = time.monotonic()
        self._last: str | None = None

    def __call__(self, text: str) -> None:
        if text == self._last:
            return
        self._last = text
        elapsed = time.monotonic() - self.started
        self.stream.write(f"{self.prefix}: [{elapsed:4.1f}s] {text}\n")
        self.stream.flush()
