"""Keepalive timing shared by both ends of a session.

A peer that has been idle for KEEPALIVE_INTERVAL sends a Ping; a connection on which nothing at
all arrived for PEER_SILENCE_TIMEOUT is treated as dead (a port-forward can hang silently
instead of closing).
"""

from __future__ import annotations

# The client pings an agent it has not heard from for a second and gives it up after four
# seconds of silence: a hung (stopped, wedged) agent is noticed within 5 s instead of holding
# the program's calls (issue #20: a SIGSTOPped agent blocked open() for 30 s). An agent that
# answers anything at all, even slowly under load, is never given up.
KEEPALIVE_INTERVAL = 1.0
AGENT_SILENCE_TIMEOUT = 4.0
# The agent drops a client it has heard nothing from for this long: a client may be stopped
# for a while (Ctrl-Z of mirrord-trace) and must find its session still there.
PEER_SILENCE_TIMEOUT = 30.0
