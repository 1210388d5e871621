"""The `sandbox` fixture: one sandbox pod per test session, always torn down.

    def test_something(sandbox):          # sandbox: mirrord_trace.sandbox.SandboxInfo
        ... sandbox.target_pid, sandbox.names, sandbox.files, sandbox.app_secret ...

The name carries the pytest process id, so parallel sessions do not collide, and a session that
was killed (no teardown ran) is recognised and removed by the next one.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator

import pytest

from mirrord_trace.sandbox import SandboxError, SandboxInfo, down, up
from mirrord_trace.sandbox.state import names_with_state

SESSION_PREFIX = "mtt"
_fresh_numbers = itertools.count(1)
# The session's sandbox is mtt<pid>; sandboxes single tests build are mtt<pid>-<suffix>.
_SESSION_NAME = re.compile(rf"{SESSION_PREFIX}(\d+)(-[a-z0-9-]+)?")


def session_sandbox_name() -> str:
    return f"{SESSION_PREFIX}{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def remove_abandoned_session_sandboxes() -> list[str]:
    """Take down sandboxes of earlier test sessions whose pytest process is gone."""
    removed = []
    for name in names_with_state():
        match = _SESSION_NAME.fullmatch(name)
        if match and int(match.group(1)) != os.getpid() and not _pid_alive(int(match.group(1))):
            down(name)
            removed.append(name)
    return removed


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxInfo]:
    if os.geteuid() != 0:
        pytest.fail("the sandbox fixture needs root (network namespaces, veth, chroot)")
    remove_abandoned_session_sandboxes()
    name = session_sandbox_name()
    try:
        info = up(name)
    except SandboxError as error:
        pytest.fail(f"sandbox could not be built: {error}")
    try:
        yield info
    finally:
        down(name)


@pytest.fixture
def fresh_sandbox_name() -> Iterator[str]:
    """A sandbox name for a test that builds (and maybe breaks) its own sandbox; whatever the test
    leaves under that name is taken down afterwards."""
    name = f"{session_sandbox_name()}-{next(_fresh_numbers)}"
    try:
        yield name
    finally:
        down(name)
