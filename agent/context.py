"""What the request handlers and the incoming service see of a session and of the server.

The session runs the handlers and the server runs the sessions; these protocols let the
handlers and the incoming service name what they use without importing either module, so
the imports stay one-way: server -> session -> handlers -> (files, net, incoming).
"""

from __future__ import annotations

import contextlib
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

from agent.files.mounts import MountWatch
from agent.files.reads import FileHandles
from agent.net.streams import PacedStreamOwner, Stream
from agent.target.root import TargetRoot
from mirrord_trace.protocol import Message


def log(message: str) -> None:
    # Whoever read our stderr may be gone (the client was killed): logging must never raise,
    # or the idle exit that follows a log line would never happen.
    with contextlib.suppress(OSError):
        print(f"mirrord-trace agent: {message}", file=sys.stderr, flush=True)


class ServerContext(Protocol):
    """The agent's listener, as its sessions see it."""

    target_pid: int
    root: TargetRoot
    token_digest: str  # SHA-256 of the session token: the agent never needs the token
    totals: Counter[str]
    malformed_frames: int
    mounts: MountWatch

    def session_info(self) -> dict[str, Any]: ...

    def session_opened(self, session: Any) -> None: ...

    def admit(self, session: Any) -> bool: ...

    def session_closed(self, session: Any, authenticated: bool) -> None: ...


class SessionContext(PacedStreamOwner, Protocol):
    """One client's session, as the request handlers and the incoming service see it."""

    server: ServerContext
    target_pid: int
    root: TargetRoot
    handles: FileHandles
    counts: Counter[str]
    byte_counts: Counter[str]  # file data read and written for the client
    close_callbacks: list[Callable[[], None]]
    suspend_callbacks: list[Callable[[], None]]
    resume_callbacks: list[Callable[[], None]]

    @property
    def takes_descriptors(self) -> bool: ...

    def send_descriptor(self, message: Message, fd: int) -> bool: ...

    def reserve_stream(self, stream_id: int) -> None: ...

    def release_stream(self, stream_id: int) -> None: ...

    def attach_stream(self, stream: Stream) -> None: ...
