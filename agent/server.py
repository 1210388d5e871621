"""The agent's listener: accepts sessions, counts requests, and decides when to exit."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections import Counter
from typing import Any

from agent.context import log
from agent.files.mounts import MountWatch
from agent.session import Session
from agent.target.root import TargetRoot
from mirrord_trace.protocol import (
    INLINE_READ_LIMIT,
    MAX_DATA_CHUNK,
    MAX_FRAME_SIZE,
    MAX_READ_SIZE,
    STREAM_WINDOW,
)

# Connections that have not said Hello yet, at most: each holds at most PREAUTH_LIMIT bytes
# for at most HANDSHAKE_TIMEOUT seconds, so strangers can make the agent hold at most
# MAX_PENDING_HANDSHAKES * (PREAUTH_LIMIT + one receive) whatever they do; further
# connections are closed at once.
MAX_PENDING_HANDSHAKES = 16


class AgentServer:
    def __init__(
        self,
        target_pid: int,
        root: TargetRoot,
        token_digest: str,
        idle_ttl: float,
        listener: socket.socket,
        session_socket: socket.socket | None = None,
    ) -> None:
        self.target_pid = target_pid
        self.root = root
        self.token_digest = token_digest
        self.idle_ttl = idle_ttl
        self.totals: Counter[str] = Counter()
        self.malformed_frames = 0
        self.mounts = MountWatch(target_pid)
        self._listener = listener
        # A local side on this machine gives the agent one end of a Unix socket pair (see
        # Session: the agent can hand whole connections over it).
        self._session_socket = session_socket
        self._sessions: set[Session] = set()
        self._pending: set[Session] = set()  # connected, no Hello yet
        self._next_session_id = 1
        self._stop: asyncio.Event | None = None
        self._idle_timer: asyncio.TimerHandle | None = None

    def session_info(self) -> dict[str, Any]:
        session_id, self._next_session_id = self._next_session_id, self._next_session_id + 1
        return {
            "session_id": session_id,
            "agent_pid": os.getpid(),
            "target_pid": self.target_pid,
            "max_frame": MAX_FRAME_SIZE,
            "inline_read_limit": INLINE_READ_LIMIT,
            "max_read_size": MAX_READ_SIZE,
            "stream_window": STREAM_WINDOW,
            "max_data_chunk": MAX_DATA_CHUNK,
        }

    def admit(self, session: Session) -> bool:
        """Whether a new connection may go on to its handshake: a Unix socket only from this
        agent's own user (root), and never more than MAX_PENDING_HANDSHAKES at once."""
        if session.peer_uid is not None and session.peer_uid != os.geteuid():
            log(f"refused client {session.peer}: only uid {os.geteuid()} may connect")
            return False
        if len(self._pending) >= MAX_PENDING_HANDSHAKES:
            log(f"refused client {session.peer}: {MAX_PENDING_HANDSHAKES} handshakes pending")
            return False
        self._pending.add(session)
        return True

    def session_opened(self, session: Session) -> None:
        self._pending.discard(session)
        self._sessions.add(session)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def session_closed(self, session: Session, authenticated: bool) -> None:
        self._pending.discard(session)
        if not authenticated:
            return
        self._sessions.discard(session)
        if not self._sessions:
            self._arm_idle_timer()

    def _arm_idle_timer(self) -> None:
        loop = asyncio.get_running_loop()
        self._idle_timer = loop.call_later(self.idle_ttl, self._idle_expired)

    def _idle_expired(self) -> None:
        log(f"no client for {self.idle_ttl:g} s: exiting")
        self.stop()

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    async def serve(self) -> None:
        """Serve until SIGTERM/SIGINT or the idle TTL; then close every session."""
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop)
        server = await loop.create_server(lambda: Session(self), sock=self._listener)
        self._arm_idle_timer()
        if self._session_socket is not None:
            unix = self._session_socket
            await loop.connect_accepted_socket(lambda: Session(self, unix), sock=unix)
        try:
            await self._stop.wait()
        finally:
            server.close()
            for session in list(self._sessions):
                session.abort()
            # Let the sessions' connection_lost callbacks run before the loop goes away.
            await asyncio.sleep(0)
            self.root.close()
