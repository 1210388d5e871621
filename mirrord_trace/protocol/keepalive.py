"""Keepalive timing shared by both ends of a session.

A peer that has been idle for KEEPALIVE_INTERVAL sends a Ping; a connection on which nothing at
all arrived for PEER_SILENCE_TIMEOUT is treated as dead (a port-forward can hang silently
instead of closing).
"""

from __future__ import annotations

KEEPALIVE_INTERVAL = 5.0
PEER_SILENCE_TIMEOUT = 30.0
