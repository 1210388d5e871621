"""Keepalive timing shared by both ends of a session.

A peer that has been idle for KEEPALIVE_INTERVAL sends a Ping; a connection on which nothing at
all arrived for PEER_SILENCE_TIMEOUT is suspect (a port-forward can hang silently instead of
closing). Silence is counted only in time the listening side was running: a process that was
stopped (Ctrl-Z, SIGSTOP) or a machine that slept did not hear anything because it was not
listening, which says nothing about its peer (see `stopped_for`).

MIRRORD_TRACE_PEER_SILENCE_TIMEOUT (seconds) changes the timeout for both ends started from one
environment (a local target's agent inherits it); the tests use it to stop a session for a few
seconds instead of minutes. The ping interval follows it down.
"""

from __future__ import annotations

import os

SILENCE_ENV = "MIRRORD_TRACE_PEER_SILENCE_TIMEOUT"
DEFAULT_PEER_SILENCE_TIMEOUT = 30.0


def _silence_timeout(raw: str | None) -> float:
    if raw is None:
        return DEFAULT_PEER_SILENCE_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise SystemExit(
            f"mirrord-trace: error: {SILENCE_ENV}={raw!r}: give a number of seconds above 0 "
            f"(default {DEFAULT_PEER_SILENCE_TIMEOUT:.0f})"
        )
    return value


PEER_SILENCE_TIMEOUT = _silence_timeout(os.environ.get(SILENCE_ENV))
KEEPALIVE_INTERVAL = min(5.0, PEER_SILENCE_TIMEOUT / 6)


def stopped_for(previous_tick: float, now: float, tick_period: float) -> float:
    """How long this process did not run between two ticks of a loop that ticks at least every
    `tick_period` (0 when it ran normally): that time is nobody's silence.

    CLOCK_MONOTONIC goes on while a process is stopped, so a gap far beyond the tick period
    means it was stopped, or the machine slept (CLOCK_MONOTONIC stands still then, but the
    peer's frames and pings stopped arriving too). A busy machine can delay a tick somewhat;
    counting such a delay as stopped time only postpones a verdict, never causes a false one.
    """
    gap = now - previous_tick
    return gap if gap > 2 * tick_period + 1.0 else 0.0


# The client's side is stricter: it pings an agent it has not heard from for a second and gives
# it up after four seconds of silence (counted, like above, only while the client runs), so a
# hung (stopped, wedged) agent is noticed within 5 s instead of holding the program's calls
# (issue #20: a SIGSTOPped agent blocked open() for 30 s). An agent that answers anything at
# all, even slowly under load, is never given up.
AGENT_SILENCE_TIMEOUT = min(4.0, PEER_SILENCE_TIMEOUT)
CLIENT_KEEPALIVE_INTERVAL = min(1.0, AGENT_SILENCE_TIMEOUT / 4)
