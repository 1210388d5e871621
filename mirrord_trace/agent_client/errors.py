"""The errors the agent client raises: a failed request, a lost agent, no session."""

from __future__ import annotations

import errno


class RemoteError(Exception):
    """A request failed; `errno` is what the traced program should see."""

    def __init__(self, errno_code: int, message: str) -> None:
        super().__init__(errno_code, message)
        self.errno = errno_code
        self.message = message

    def __str__(self) -> str:
        return f"{self.message} ({errno.errorcode.get(self.errno, self.errno)})"


class AgentLost(RemoteError):
    """The connection to the agent is gone; every later request fails the same way."""


class AgentConnectError(Exception):
    """No session could be opened (agent unreachable, handshake refused...)."""


class HandshakeRejected(AgentConnectError):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"the agent refused the session ({reason}): {message}")
        self.reason = reason

