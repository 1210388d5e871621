"""Incoming traffic end to end: real clients on this machine talk to the sandbox pod's app port
while real programs (static Go, static busybox, static and dynamic C, Python) run under
`mirrord-trace exec --target pid/<pod target>`: mirrored copies, stolen traffic, HTTP-filtered
steal, port mapping, and the steal rules' clean-up however the session ends.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agent.incoming.rules import COMMENT_PREFIX
from mirrord_trace.sandbox import SandboxInfo
from tests.conftest import example_binary
from tests.test_incoming_support import (
    NSENTER,
    alive,
    http_request,
    in_pod,
    nat_rules,
    raw_exchange,
    real_listening_ports,
    traced_server,
    wait_until,
)

GO_ANSWER = b"hello from probe-go\n"
X_USER_ME = {"feature": {"network": {"incoming": {
    "mode": "steal", "http_filter": {"header_filter": "^x-user: me$"},
}}}}  # fmt: skip


@pytest.fixture
def pod(sandbox: SandboxInfo) -> Iterator[SandboxInfo]:
    """The sandbox, checked after each test: no steal rule left, the pod app answers itself."""
    yield sandbox
    left = nat_rules(sandbox)
    if left:
        subprocess.run(
            [NSENTER, f"--net={sandbox.netns_path}", sys.executable, "-c",
             "from agent.incoming.rules import remove_rules; "
             f"remove_rules(lambda c: c.startswith({COMMENT_PREFIX!r}))"],
            check=False, cwd=Path(__file__).resolve().parent.parent,
        )  # fmt: skip
    assert not left, f"steal rules left behind in the pod: {left}"


def pod_get(pod: SandboxInfo, path: str = "/", **headers: str) -> tuple[int, bytes]:
    return http_request(pod.target_addr, pod.app_port, path=path, headers=headers)


def go_serve() -> list[str]:
    return [str(example_binary("probe-go")), "serve", ":8080"]


# ---- mirror ----------------------------------------------------------------------------------


def test_mirror_copies_100_concurrent_connections_while_the_pod_answers(pod: SandboxInfo) -> None:
    with traced_server(pod, go_serve()) as server:
        assert server.seen[-1] == "listening 8080"  # getsockname: the port it asked for

        def fetch(number: int) -> tuple[int, bytes]:
            return pod_get(pod, f"/index.html?id={number}")

        with ThreadPoolExecutor(100) as pool:
            answers = list(pool.map(fetch, range(100)))
        assert answers == [(200, pod.app_body.encode())] * 100
        server.wait_for(f"request GET /index.html?id={n} HTTP/1.1" for n in range(100))


def test_mirror_delivers_large_bodies_byte_exact(pod: SandboxInfo, tmp_path: Path) -> None:
    """busybox nc (static) hashes each mirrored connection's whole byte stream."""
    log = tmp_path / "streams.sha256"
    hasher = ["/bin/sh", "-c", f"sha256sum | cut -d' ' -f1 >> {log}"]
    argv = [str(example_binary("busybox")), "nc", "-ll", "-p", "8080", "-e", *hasher]
    bodies = [os.urandom(size) for size in (1, 70_000, 1_000_000, 3_000_000, 3_500_000)]
    requests = [
        b"POST /cgi-bin/echo HTTP/1.1\r\nHost: app\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body
        for body in bodies
    ]
    with traced_server(pod, argv, ready=None, tmp_path=tmp_path) as server:
        with ThreadPoolExecutor(len(requests)) as pool:
            answers = list(
                pool.map(lambda r: raw_exchange(pod.target_addr, pod.app_port, r), requests)
            )
        for body, answer in zip(bodies, answers, strict=True):  # the pod app answered each
            assert f"body-sha256={hashlib.sha256(body).hexdigest()}".encode() in answer
        expected = sorted(hashlib.sha256(request).hexdigest() for request in requests)
        wait_until(
            lambda: log.exists() and len(log.read_text().split()) >= len(expected),
            30,
            "every mirrored stream to be hashed",
        )
        assert sorted(log.read_text().split()) == expected
        assert server.process.poll() is None


def test_two_programs_mirror_the_same_port_side_by_side(pod: SandboxInfo) -> None:
    with (
        traced_server(pod, go_serve()) as go,
        traced_server(pod, [str(example_binary("probe-static")), "serve", "8080"]) as c,
    ):
        assert go.seen[-1] == c.seen[-1] == "listening 8080"
        go_ports = real_listening_ports(go.program_pid)
        c_ports = real_listening_ports(c.program_pid)
        assert go_ports and c_ports and not go_ports & c_ports
        assert 8080 not in go_ports | c_ports
        assert pod_get(pod, "/index.html?both") == (200, pod.app_body.encode())
        go.wait_for(["request GET /index.html?both HTTP/1.1"])
        c.wait_for(["request GET /index.html?both HTTP/1.1"])


# ---- steal -----------------------------------------------------------------------------------


@pytest.mark.parametrize("handover", ["1", "0"])
def test_a_stolen_connection_is_the_clients_own(
    pod: SandboxInfo, handover: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The static C server (blocking accept4 with no address buffer) logs getpeername of
    each connection. From a local target the stolen connection itself is put in place of the
    relay's at accept, so the program talks to the real client (the host's address), as the
    pod's app would; on the stream path (a pod's agent) it is the relay on loopback. Both
    answer the client alike."""
    monkeypatch.setenv("MIRRORD_TRACE_INCOMING_HANDOVER", handover)
    server_argv = [str(example_binary("probe-static")), "serve", "8080"]
    with traced_server(pod, server_argv, "--steal") as server:
        for index in range(3):
            assert pod_get(pod, f"/who-{index}")[0] == 200
            server.wait_for([f"request GET /who-{index} HTTP/1.1"])
        peers = [line.split()[1] for line in server.seen if line.startswith("peer ")]
        assert len(peers) == 3
        hosts = {peer.rsplit(":", 1)[0] for peer in peers}
        assert hosts == ({pod.host_addr} if handover == "1" else {"127.0.0.1"}), peers


def test_steal_the_static_go_server_answers_instead(pod: SandboxInfo) -> None:
    body = os.urandom(4_000_000)
    with traced_server(pod, go_serve(), "--steal") as server:
        assert len(nat_rules(pod)) >= 2
        assert pod_get(pod, "/stolen") == (200, GO_ANSWER + b"GET /stolen HTTP/1.1\n")
        status, answer = http_request(
            pod.target_addr, pod.app_port, "POST", "/upload", body=body
        )
        digest = hashlib.sha256(body).hexdigest()
        assert (status, answer) == (200, f"sha256={digest} length={len(body)}\n".encode())

        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(lambda n: pod_get(pod, f"/c{n}"), range(20)))
        assert answers == [(200, GO_ANSWER + f"GET /c{n} HTTP/1.1\n".encode()) for n in range(20)]
        server.wait_for(["request GET /stolen HTTP/1.1", "request POST /upload HTTP/1.1"])
    assert nat_rules(pod) == []
    assert pod_get(pod) == (200, pod.app_body.encode())  # the pod answers again


ECHO_SERVER = """
import socket
server = socket.create_server(("0.0.0.0", 8080))
print("listening 8080", flush=True)
while True:
    connection, _ = server.accept()
    total = 0
    while data := connection.recv(65536):
        connection.sendall(data)
        total += len(data)
    connection.shutdown(socket.SHUT_WR)  # the client's end of file, passed back
    print("echoed", total, flush=True)
    connection.close()
"""


def _send_all_then_end(sock: socket.socket, data: bytes) -> None:
    sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)


@pytest.fixture(params=["handover", "stream"])
def steal_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways a stolen connection reaches the program from a local agent: handed over whole
    (the default), or through the session's stream like from a pod's agent."""
    if request.param == "stream":
        monkeypatch.setenv("MIRRORD_TRACE_INCOMING_HANDOVER", "0")
    return str(request.param)


def test_stolen_bytes_and_ends_of_file_travel_both_ways_intact(
    pod: SandboxInfo, steal_path: str
) -> None:
    """8 MB each way at once (both directions push back on the other), then each side's FIN."""
    body = os.urandom(8 * 1024 * 1024)
    with traced_server(pod, [sys.executable, "-c", ECHO_SERVER], "--steal") as server:
        for _ in range(2):  # one connection after another through the same subscription
            client = socket.create_connection((pod.target_addr, pod.app_port), timeout=30)
            with ThreadPoolExecutor(1) as pool:
                sending = pool.submit(_send_all_then_end, client, body)
                received = bytearray()
                while chunk := client.recv(1 << 20):  # until the program's end of file
                    received += chunk
                sending.result()
            client.close()
            assert hashlib.sha256(received).digest() == hashlib.sha256(body).digest()
            assert server.next_line() == f"echoed {len(body)}"


def test_filtered_steal_mixes_program_and_pod_on_one_keep_alive_connection(
    pod: SandboxInfo, tmp_path: Path
) -> None:
    with traced_server(pod, go_serve(), config=X_USER_ME, tmp_path=tmp_path) as server:
        connection = http.client.HTTPConnection(pod.target_addr, pod.app_port, timeout=30)
        connection.connect()
        first_socket = connection.sock
        seen = []
        for number in range(6):
            headers = {"x-user": "me"} if number % 2 else {"x-user": "someone-else"}
            connection.request("GET", f"/k{number}", headers=headers)
            response = connection.getresponse()
            seen.append((response.status, response.read()))
        body = os.urandom(300_000)
        connection.request("POST", "/cgi-bin/echo", body=body, headers={"X-User": "me"})
        posted_to_program = connection.getresponse().read()
        connection.request("POST", "/cgi-bin/echo", body=body)
        posted_to_pod = connection.getresponse().read()
        assert connection.sock is first_socket  # one keep-alive connection throughout
        connection.close()

        for number, (status, answer) in enumerate(seen):
            if number % 2:
                assert (status, answer) == (200, GO_ANSWER + f"GET /k{number} HTTP/1.1\n".encode())
            else:
                assert status == 404 and b"404 Not Found" in answer  # the pod app's answer
        digest = hashlib.sha256(body).hexdigest()
        assert posted_to_program == f"sha256={digest} length={len(body)}\n".encode()
        assert f"body-sha256={digest}".encode() in posted_to_pod
        assert b"hostname=app-" in posted_to_pod
        assert pod_get(pod, "/", **{"X-USER": "me"})[1].startswith(GO_ANSWER)
        assert pod_get(pod) == (200, pod.app_body.encode())
        server.wait_for(["request POST /cgi-bin/echo HTTP/1.1"])
        assert sorted(line for line in server.seen if line.startswith("request GET /k")) == [
            "request GET /k1 HTTP/1.1", "request GET /k3 HTTP/1.1", "request GET /k5 HTTP/1.1",
        ]  # fmt: skip


def test_filtered_steal_passes_non_http_traffic_to_the_pod(pod: SandboxInfo, tmp_path: Path):
    with traced_server(pod, go_serve(), config=X_USER_ME, tmp_path=tmp_path):
        # Not HTTP: the pod's httpd gets the bytes as they are and answers 400.
        answer = raw_exchange(pod.target_addr, pod.app_port, b"\x16\x03\x01 not http\r\n\r\n")
        assert answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(b"\r\n")[0]


def test_http_filter_ports_follow_mirrord_3_250(pod: SandboxInfo, tmp_path: Path) -> None:
    """No `http_filter.ports`: the filter applies on every stolen port (here 3000, where the
    pod has no server: what does not match gets a 502). With `ports: [8080]`, port 3000 is
    stolen whole."""
    serve_3000 = [str(example_binary("probe-go")), "serve", ":3000"]
    with traced_server(pod, serve_3000, config=X_USER_ME, tmp_path=tmp_path):
        mine = http_request(pod.target_addr, 3000, path="/p", headers={"X-User": "me"})
        assert mine == (200, GO_ANSWER + b"GET /p HTTP/1.1\n")
        other = http_request(pod.target_addr, 3000, path="/q")
        assert other[0] == 502 and b"cannot be reached" in other[1]
    only_8080 = {"feature": {"network": {"incoming": {
        "mode": "steal", "http_filter": {"header_filter": "^x-user: me$", "ports": [8080]},
    }}}}  # fmt: skip
    with traced_server(pod, serve_3000, config=only_8080, tmp_path=tmp_path):
        assert http_request(pod.target_addr, 3000, path="/w")[1].startswith(GO_ANSWER)


def test_method_and_json_body_filters_through_the_pod(pod: SandboxInfo, tmp_path: Path) -> None:
    config = {"feature": {"network": {"incoming": {"mode": "steal", "http_filter": {"all_of": [
        {"method": "POST"},
        {"body": "json", "query": "$.order.customer", "matches": "^alice$"},
    ]}}}}}  # fmt: skip
    with traced_server(pod, go_serve(), config=config, tmp_path=tmp_path):
        alice = b'{"order": {"customer": "alice", "items": [1, 2]}}'
        bob = b'{"order": {"customer": "bob"}}'
        to_program = http_request(pod.target_addr, pod.app_port, "POST", "/cgi-bin/echo", alice)
        assert to_program[1].startswith(b"sha256=")  # probe-go's echo answer
        to_pod = http_request(pod.target_addr, pod.app_port, "POST", "/cgi-bin/echo", bob)
        assert b"body-sha256=" in to_pod[1] and b"hostname=app-" in to_pod[1]  # the pod's CGI
        assert pod_get(pod) == (200, pod.app_body.encode())  # a GET: not a POST, the pod's


def test_steal_reaches_the_program_from_inside_the_pod_over_ipv6(pod: SandboxInfo) -> None:
    """Connections made inside the target's namespace (OUTPUT rules), here to [::1]."""
    with traced_server(pod, go_serve(), "--steal"):
        inside = subprocess.run(
            [NSENTER, f"--net={pod.netns_path}", "curl", "-s", "-m", "10",
             f"http://[::1]:{pod.app_port}/from-inside"],
            capture_output=True, check=False,
        )  # fmt: skip
        assert inside.stdout == GO_ANSWER + b"GET /from-inside HTTP/1.1\n"


def test_second_session_cannot_steal_a_stolen_port(pod: SandboxInfo) -> None:
    with traced_server(pod, go_serve(), "--steal"):
        second = subprocess.run(
            [str(Path(sys.executable).parent / "mirrord-trace"), "exec", "--fs-mode", "local",
             "--steal", "--target", f"pid/{pod.target_pid}", "--", *go_serve()],
            capture_output=True, timeout=60, check=False,
        )  # fmt: skip
        message = second.stderr.decode()
        assert second.returncode != 0
        assert "cannot steal port 8080 of the target" in message
        assert "stolen by another mirrord-trace session" in message
        assert pod_get(pod, "/still-mine")[1].startswith(GO_ANSWER)


def test_on_concurrent_steal_continue_and_override(pod: SandboxInfo, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("second session\n")
    second = [sys.executable, "-u", "-m", "http.server", "8080", "--directory", str(site)]

    def config(choice: str) -> dict:
        return {"feature": {"network": {"incoming": {
            "mode": "steal", "on_concurrent_steal": choice,
        }}}}  # fmt: skip

    with traced_server(pod, go_serve(), "--steal"):
        with traced_server(
            pod, second, config=config("continue"), tmp_path=tmp_path, ready="Serving"
        ) as kept_out:
            assert pod_get(pod, "/first")[1].startswith(GO_ANSWER)  # still the first session's
        assert b'on_concurrent_steal is "continue"' in kept_out.stderr
        overriding = config("override")
        with traced_server(pod, second, config=overriding, tmp_path=tmp_path, ready="Serving"):
            assert pod_get(pod, "/index.html") == (200, b"second session\n")


NAMED_ECHO_SERVER = """
import socket, sys, threading
server = socket.create_server(("0.0.0.0", 7070))
print("listening 7070", flush=True)
def echo(connection):
    while data := connection.recv(4096):
        connection.sendall(sys.argv[1].encode() + b":" + data)
while True:
    threading.Thread(target=echo, args=(server.accept()[0],), daemon=True).start()
"""


@contextlib.contextmanager
def tracked_connections(pod: SandboxInfo) -> Iterator[None]:
    """The pod's namespace tracks its connections before the steal, as it does where any
    netfilter rule uses conntrack there (a mesh sidecar's nat rules, a network policy): an
    ACCEPT rule for established traffic. Without one, the kernel tracks nothing in a namespace
    until the steal's nat rules come, and a connection opened before is picked up (and reset)
    by its next packet whatever the setting."""
    rule = ["INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED", "-m", "comment",
            "--comment", "mirrord-trace-test", "-j", "ACCEPT"]  # fmt: skip
    iptables = [NSENTER, f"--net={pod.netns_path}", "iptables", "-w", "10"]
    subprocess.run([*iptables, "-A", *rule], check=True)
    try:
        yield
    finally:
        subprocess.run([*iptables, "-D", *rule], check=True)


def _was_cut(sock: socket.socket) -> bool:
    """Whether a connection that worked is gone (reset, or closed) when used again."""
    try:
        sock.sendall(b"again")
        return sock.recv(100) == b""
    except OSError:
        return True


def test_flush_connections_cuts_what_was_open_before_the_steal(
    pod: SandboxInfo, tmp_path: Path
) -> None:
    """Without agent.flush_connections a connection opened before the steal goes on with the
    pod's server; with it, that connection is cut, and the client's next one is stolen."""
    pod_echo = [sys.executable, "-c", NAMED_ECHO_SERVER, "pod"]
    program = [sys.executable, "-c", NAMED_ECHO_SERVER, "program"]
    steal = {"feature": {"network": {"incoming": "steal"}}}
    with in_pod(pod, pod_echo, 7070), tracked_connections(pod):
        for flush in (False, True):
            before = socket.create_connection((pod.target_addr, 7070), timeout=10)
            before.sendall(b"hi")
            assert before.recv(100) == b"pod:hi"
            config = {**steal, "agent": {"flush_connections": flush}}
            with traced_server(pod, program, config=config, tmp_path=tmp_path):
                if flush:
                    assert _was_cut(before)
                else:
                    before.sendall(b"still")
                    assert before.recv(100) == b"pod:still"  # REDIRECT: new connections only
                with socket.create_connection((pod.target_addr, 7070), timeout=10) as new:
                    new.sendall(b"x")
                    assert new.recv(100) == b"program:x"
            before.close()


# ---- what the program sees -------------------------------------------------------------------

PEEK_SERVER = """
import socket, sys
server = socket.socket(socket.AF_INET6 if sys.argv[1] == "6" else socket.AF_INET)
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("::" if sys.argv[1] == "6" else "0.0.0.0", 8080))
server.listen()
print("listening", server.getsockname()[1], flush=True)
connection, peer = server.accept()
print("peer", peer[0], "local", *connection.getsockname()[:2], flush=True)
connection.sendall(b"HTTP/1.0 200 OK\\r\\nContent-Length: 3\\r\\n\\r\\nok\\n")
connection.close()
"""


@pytest.mark.parametrize("family", ["4", "6"])
def test_accept_and_getsockname_show_the_original_connection(
    pod: SandboxInfo, family: str
) -> None:
    with traced_server(pod, [sys.executable, "-c", PEEK_SERVER, family], "--steal") as server:
        assert server.seen[-1] == "listening 8080"
        assert pod_get(pod) == (200, b"ok\n")
        line = server.next_line()
    mapped = "::ffff:" if family == "6" else ""
    assert line == f"peer {mapped}{pod.host_addr} local {mapped}{pod.target_addr} 8080"


def _free_port() -> int:
    """A free port below the ephemeral range (32768 and up by default): a port the kernel
    handed out for bind(0) may be handed out again, as the source port of a connection the
    session makes, before the program gets to bind it (a rare EADDRINUSE)."""
    low, _ = (int(n) for n in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    for port in random.sample(range(20000, min(low, 32768)), 200):
        with socket.socket() as probe:
            try:
                probe.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port below the ephemeral range")


def test_port_mapping_and_listen_ports(pod: SandboxInfo, tmp_path: Path) -> None:
    local_port = _free_port()
    config = {"feature": {"network": {"incoming": {
        "port_mapping": [[9333, 8080]], "listen_ports": [[9333, local_port]],
    }}}}  # fmt: skip
    argv = [str(example_binary("probe-go")), "serve", ":9333"]
    with traced_server(pod, argv, config=config, tmp_path=tmp_path) as server:
        assert server.seen[-1] == "listening 9333"
        assert real_listening_ports(server.program_pid) == {local_port}
        assert pod_get(pod, "/?mapped") == (200, pod.app_body.encode())  # mirrored: pod answers
        server.wait_for(["request GET /?mapped HTTP/1.1"])
        direct = http_request("127.0.0.1", local_port, path="/direct")
        assert direct == (200, GO_ANSWER + b"GET /direct HTTP/1.1\n")


@pytest.mark.parametrize("setting", ["ignore_ports", "off"])
def test_ports_that_stay_local_are_bound_for_real(
    pod: SandboxInfo, tmp_path: Path, setting: str
) -> None:
    port = _free_port()
    incoming = {"ignore_ports": [port]} if setting == "ignore_ports" else {"mode": "off"}
    config = {"feature": {"network": {"incoming": incoming}}}
    argv = [str(example_binary("probe-go")), "serve", f":{port}"]
    with traced_server(pod, argv, config=config, tmp_path=tmp_path) as server:
        assert server.seen[-1] == f"listening {port}"
        assert real_listening_ports(server.program_pid) == {port}
        assert http_request("127.0.0.1", port, path="/local")[1].startswith(GO_ANSWER)


# ---- clean-up --------------------------------------------------------------------------------


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not alive(pid), 10, f"process {pid} to die")


def test_rules_go_when_the_agent_is_killed(pod: SandboxInfo) -> None:
    with traced_server(pod, go_serve(), "--steal") as server:
        assert pod_get(pod)[1].startswith(GO_ANSWER)
        guardian = server.guardian_pid()
        assert guardian is not None
        _kill(server.agent_pid)
        wait_until(lambda: not nat_rules(pod), 10, "the guardian to remove the rules")
        wait_until(lambda: not alive(guardian), 10, "the guardian to exit")
        assert pod_get(pod) == (200, pod.app_body.encode())


def test_rules_go_when_the_supervisor_is_killed(pod: SandboxInfo) -> None:
    with traced_server(pod, go_serve(), "--steal") as server:
        agent, program = server.agent_pid, server.program_pid
        assert pod_get(pod)[1].startswith(GO_ANSWER)
        try:
            _kill(server.process.pid)
            wait_until(lambda: not alive(program), 10, "the program to die with the supervisor")
            wait_until(lambda: not nat_rules(pod), 10, "the agent to remove the rules")
            assert pod_get(pod) == (200, pod.app_body.encode())
        finally:
            if alive(agent):  # it would leave on its own after its idle time
                os.kill(agent, signal.SIGTERM)
                wait_until(lambda: not alive(agent), 10, "the agent to stop")


def test_a_new_session_starts_clean_after_agent_and_guardian_died(pod: SandboxInfo) -> None:
    with traced_server(pod, go_serve(), "--steal") as server:
        guardian = server.guardian_pid()
        assert guardian is not None
        _kill(guardian)
        _kill(server.agent_pid)
        stale = nat_rules(pod)
        assert len(stale) >= 2  # a crash with nobody left to clean up
        with pytest.raises(OSError):  # redirected to a listener that is gone
            pod_get(pod)
    with traced_server(pod, go_serve(), "--steal"):
        assert not set(nat_rules(pod)) & set(stale)
        assert pod_get(pod, "/fresh")[1] == GO_ANSWER + b"GET /fresh HTTP/1.1\n"
    assert pod_get(pod) == (200, pod.app_body.encode())


def test_guardian_cleans_up_when_terminated(pod: SandboxInfo) -> None:
    """SIGTERM to the guardian (a node shutting down) removes the rules before it exits."""
    with traced_server(pod, go_serve(), "--steal") as server:
        guardian = server.guardian_pid()
        assert guardian is not None
        os.kill(guardian, signal.SIGTERM)
        wait_until(lambda: not alive(guardian), 10, "the guardian to exit")
        assert nat_rules(pod) == []


def test_clients_that_abort_mid_request_do_not_break_the_session(
    pod: SandboxInfo, steal_path: str
) -> None:
    with traced_server(pod, go_serve(), "--steal"):

        def abort_after_request(number: int) -> None:
            sock = socket.create_connection((pod.target_addr, pod.app_port), timeout=10)
            if number % 2:  # an answered request first (an idle keep-alive connection)
                sock.sendall(f"GET /abandoned{number} HTTP/1.1\r\nHost: app\r\n\r\n".encode())
                sock.recv(65536)
            # Half-close, then reset: the program's end of the stream closes after the client
            # is gone (what a load generator does when it stops).
            sock.shutdown(socket.SHUT_WR)
            time.sleep(0.001 * (number % 4))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(abort_after_request, range(200)))
        assert pod_get(pod, "/after")[1] == GO_ANSWER + b"GET /after HTTP/1.1\n"
