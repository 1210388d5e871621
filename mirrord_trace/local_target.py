"""Local targets (`--target pid/N`): run an agent on this machine for a local process."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable

from mirrord_trace.agent_client import AgentClient, AgentConnectError
from mirrord_trace.protocol import new_token, token_digest
from mirrord_trace.signal_mask import helper_threads_spared

TOKEN_ENV = "MIRRORD_TRACE_AGENT_TOKEN"
TOKEN_SHA256_ENV = "MIRRORD_TRACE_AGENT_TOKEN_SHA256"
_STOP_GRACE = 3.0


class TargetError(Exception):
    """The target cannot be used; the message says why and what to do (the CLI prints it)."""


class LocalAgent:
    """Starts `python -m agent` for local process `pid`; entering yields a connected client.

    The token's digest reaches the agent through its environment, which only root can read
    (it would be visible to every user in argv). The agent's stderr is kept (see stderr_lines) so a
    failure can be explained.

    Nothing listens on the network: the session is a Unix socket pair, and further sessions
    (`connect()`) go through a Unix socket in a 0700 directory of this user's, which the agent
    also checks with SO_PEERCRED (issue #20: a TCP listener on 127.0.0.1 let every local user
    make the root agent buffer their bytes).
    """

    def __init__(
        self,
        pid: int,
        *,
        idle_ttl: float = 30.0,
        startup_timeout: float = 15.0,
        meanwhile: Callable[[], object] | None = None,
    ) -> None:
        self.pid = pid
        # Run while the agent starts (a Python start-up of its own, ~0.1 s): the caller's own
        # start-up work overlaps with it instead of following it.
        self.meanwhile = meanwhile
        self.idle_ttl = idle_ttl
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.client: AgentClient | None = None
        self.socket_path: str | None = None  # for further sessions: connect()
        self._socket_dir: str | None = None
        self.token = new_token()  # callers may open further sessions with it
        self._stderr: deque[str] = deque(maxlen=200)
        self._stderr_reader: threading.Thread | None = None

    def stderr_lines(self) -> list[str]:
        """What the agent printed on stderr so far (the last 200 lines)."""
        return list(self._stderr)

    def __enter__(self) -> AgentClient:
        self._check_target()
        token = self.token
        ready_read, ready_write = os.pipe2(os.O_CLOEXEC)
        # The session goes over a Unix socket pair, not the agent's TCP listener: no TCP
        # segments or ACKs per frame, and descriptors can travel over it (stolen connections
        # handed over whole, see HANDOVER in the protocol). The listener stays, for further
        # sessions (`connect()`), on a Unix socket in a private directory.
        self._socket_dir = tempfile.mkdtemp(prefix="mirrord-trace-agent-")  # mode 0700
        socket_path = os.path.join(self._socket_dir, "agent.sock")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        for end in (ours, theirs):
            _enlarge_send_buffer(end)
        try:
            self.process = subprocess.Popen(
                self._agent_command(ready_write, theirs.fileno(), socket_path),
                # Only the digest: the agent checks tokens, it never needs to present one.
                env={**os.environ, TOKEN_SHA256_ENV: token_digest(token)},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                pass_fds=(ready_write, theirs.fileno()),
                # Its own session: a Ctrl-C meant for the traced program must not reach it.
                start_new_session=True,
            )
        except BaseException:
            ours.close()
            self._remove_socket_dir()
            raise
        finally:
            os.close(ready_write)
            theirs.close()
        try:
            self._stderr_reader = threading.Thread(
                target=self._collect_stderr, name="mirrord-trace-agent-stderr", daemon=True
            )
            with helper_threads_spared():
                self._stderr_reader.start()
            if self.meanwhile is not None:
                self.meanwhile()
            self.socket_path = self._wait_until_ready(ready_read)
        except BaseException:
            ours.close()
            self._stop_agent()
            raise
        finally:
            os.close(ready_read)
        try:
            self.client = AgentClient.over_socket(ours, token, where="its socket pair")
        except AgentConnectError as error:
            self._stop_agent()
            raise TargetError(f"cannot talk to the agent for process {self.pid}: {error}") from None
        return self.client

    def connect(self, token: str | None = None) -> AgentClient:
        """A further session with this agent (with another token, to test refusals)."""
        if self.socket_path is None:
            raise TargetError("the agent is not running")
        return AgentClient.connect_unix(self.socket_path, token or self.token)

    def __exit__(self, *exc_info: object) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        self._stop_agent()

    def _agent_command(self, ready_fd: int, session_fd: int, socket_path: str) -> list[str]:
        return [
            *(sys.executable, "-m", "agent", "--target-pid", str(self.pid)),
            *("--listen", f"unix:{socket_path}", "--idle-ttl", repr(self.idle_ttl)),
            *("--ready-fd", str(ready_fd), "--session-fd", str(session_fd)),
        ]

    def _check_target(self) -> None:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            raise TargetError(
                f"there is no process with pid {self.pid}: check the pid in --target pid/N"
            ) from None
        except PermissionError:
            pass  # it exists; the root check below says what is missing
        if os.geteuid() != 0:
            raise TargetError("entering another process's namespaces needs root: run with sudo")

    def _collect_stderr(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        for raw in self.process.stderr:
            self._stderr.append(raw.decode(errors="replace").rstrip("\n"))

    def _failure(self, what: str) -> TargetError:
        assert self.process is not None
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=2.0)
        if self._stderr_reader is not None:
            self._stderr_reader.join(timeout=2.0)
        last = next((line for line in reversed(self._stderr) if line.strip()), "")
        detail = f": {last}" if last else " (it printed nothing)"
        return TargetError(f"the agent for process {self.pid} {what}{detail}")

    def _wait_until_ready(self, ready_fd: int) -> str:
        deadline = time.monotonic() + self.startup_timeout
        line = b""
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([ready_fd], [], [], remaining)[0]:
                raise self._failure(f"did not start within {self.startup_timeout:g} s")
            chunk = os.read(ready_fd, 4096)
            if not chunk:
                raise self._failure("failed to start")
            line += chunk
        try:
            return str(json.loads(line)["path"])
        except (ValueError, KeyError, TypeError):
            raise self._failure(f"announced an unreadable ready line {line!r}") from None

    def _stop_agent(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            if not _exited_within(process, _STOP_GRACE):
                process.kill()
                process.wait()
        if self._stderr_reader is not None:
            self._stderr_reader.join(timeout=2.0)
        if process.stderr is not None:
            process.stderr.close()
        self._remove_socket_dir()

    def _remove_socket_dir(self) -> None:
        directory, self._socket_dir, self.socket_path = self._socket_dir, None, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


def _exited_within(process: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait for `process` to exit (and reap it); False if it has not within `timeout` s.

    Through a pidfd, which polls readable the moment the process exits: Popen.wait(timeout)
    sleeps in growing steps (up to 50 ms) between checks, which added up to a sixth of a
    local target's whole `exec -- /bin/true`.
    """
    try:
        pidfd = os.pidfd_open(process.pid)
    except OSError:  # no pidfds (Linux < 5.3): Popen's own polling
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        if not poller.poll(timeout * 1000):
            return False
    finally:
        os.close(pidfd)
    process.wait()
    return True


# A Unix socket's default send buffer (~208 KiB, net.core.wmem_max) holds a fifth of one 1 MiB
# read reply: a remote file streamed in 1 MiB replies took five sends, five receives and five
# wake-ups of each side per MiB.
_SESSION_SEND_BUFFER = 4 * 1024 * 1024
_SO_SNDBUFFORCE = 32  # Linux; not in Python's socket module


def _enlarge_send_buffer(sock: socket.socket) -> None:
    """Give the session's socket a send buffer of _SESSION_SEND_BUFFER (root may exceed
    net.core.wmem_max with SO_SNDBUFFORCE; a local target needs root anyway)."""
    for option in (_SO_SNDBUFFORCE, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, _SESSION_SEND_BUFFER)
        except OSError:
            continue
        return
