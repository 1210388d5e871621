"""A session survives a stop of the local side longer than the agent's silence timeout (Ctrl-Z,
SIGSTOP, a laptop sleep): the agent keeps the session, gives stolen ports back to the target
while nobody answers, and takes them again when the local side is back.

MIRRORD_TRACE_PEER_SILENCE_TIMEOUT (read by mirrord-trace and the local agent it starts) makes
the timeout 2 s, so the tests stop mirrord-trace for a few seconds instead of minutes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from mirrord_trace.protocol.keepalive import SILENCE_ENV
from tests.test_fs_remote import MIRRORD_TRACE, SYSTEM_PYTHON, pod_file
from tests.test_incoming import GO_ANSWER, go_serve, pod, pod_get  # noqa: F401 (pod: a fixture)
from tests.test_incoming_support import http_request, traced_server, wait_until

TIMEOUT = 2.0
STOPPED_FOR = 3 * TIMEOUT  # well past the timeout on both sides


def test_files_still_read_after_a_stop_longer_than_the_timeout(sandbox) -> None:
    script = (
        "import sys\n"
        "print(open('/app/config.yaml').readline(), end='', flush=True)\n"
        "sys.stdin.readline()\n"
        "print(open('/app/data/greeting.txt').read(), end='', flush=True)\n"
    )
    process = subprocess.Popen(
        [MIRRORD_TRACE, "exec", "--target", f"pid/{sandbox.target_pid}", "--",
         SYSTEM_PYTHON, "-c", script],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, SILENCE_ENV: str(TIMEOUT)},
    )  # fmt: skip
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        os.kill(process.pid, signal.SIGSTOP)  # the local side only: the agent runs on
        time.sleep(STOPPED_FOR)
        os.kill(process.pid, signal.SIGCONT)
        rest, errors = process.communicate(b"\n", timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    config = pod_file(sandbox, "/app/config.yaml").read_text()
    assert first.decode() == config.splitlines(keepends=True)[0]
    assert process.returncode == 0, errors
    assert rest == pod_file(sandbox, "/app/data/greeting.txt").read_bytes()
    assert b"lost the connection" not in errors


def test_stolen_port_goes_back_to_the_pod_while_stopped(
    pod, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    monkeypatch.setenv(SILENCE_ENV, str(TIMEOUT))
    with traced_server(pod, go_serve(), "--steal") as server:
        assert pod_get(pod, "/a") == (200, GO_ANSWER + b"GET /a HTTP/1.1\n")
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            time.sleep(STOPPED_FOR)
            # Nobody answers for the program: the pod's own server does.
            status, body = http_request(pod.target_addr, pod.app_port, path="/", timeout=10)
            assert (status, body) == (200, pod.app_body.encode())
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        wait_until(
            lambda: answer(pod, "/b") == (200, GO_ANSWER + b"GET /b HTTP/1.1\n"),
            timeout=30,
            what="the program to be given the port again",
        )


def answer(pod, path: str) -> tuple[int, bytes] | None:  # noqa: F811
    try:
        return http_request(pod.target_addr, pod.app_port, path=path, timeout=5)
    except OSError:
        return None
