"""Errors the sandbox reports; each message is one line saying what is wrong and what to do."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mirrord_trace.sandbox.info import SandboxInfo


class SandboxError(Exception):
    """The sandbox could not be built, inspected or removed."""


class SandboxExistsError(SandboxError):
    """A healthy sandbox of that name is already up."""

    def __init__(self, info: SandboxInfo) -> None:
        super().__init__(
            f"sandbox {info.name!r} is already up (target pid {info.target_pid}); "
            f"remove it first with: mirrord-trace sandbox down --name {info.name}"
        )
        self.info = info
