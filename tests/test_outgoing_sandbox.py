"""Outgoing connections through the target, end to end against the sandbox pod.

The pod's service address (10.214.x.20) and its DNS names exist only inside the pod's network
namespace: this machine has an "unreachable" route for them. Everything the programs here
reach there, they reach through the agent, from the pod.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import pytest

from tests.conftest import example_binary
from tests.test_outgoing_support import native, pod_server, trace_lines, traced

SERVICE_NAME = "api.default.svc.cluster.local"
APP_NAME = "app.default.svc.cluster.local"


def _http_get(client: str, url: str) -> list[str]:
    if client == "wget":
        return [str(example_binary("busybox")), "wget", "-q", "-O", "-", url]
    if client == "curl":
        return ["curl", "-sS", "--noproxy", "*", url]
    return [str(example_binary(client)), "http-get", url]


@pytest.mark.parametrize("client", ["probe-go", "probe-musl", "probe-static", "wget", "curl"])
def test_cluster_only_name_serves_the_pod_only_body(sandbox, client: str) -> None:
    url = f"http://{SERVICE_NAME}/"
    out = traced(sandbox, _http_get(client, url))
    assert out.returncode == 0, out.stderr
    assert out.stdout == sandbox.service_body
    without = native(_http_get(client, url))
    assert without.returncode != 0
    assert sandbox.service_body not in without.stdout


def test_without_mirrord_trace_the_address_is_unreachable(sandbox) -> None:
    out = native([str(example_binary("probe-go")), "dial", f"{sandbox.service_addr}:80"])
    assert out.stdout.strip() == "EHOSTUNREACH"


def test_short_names_resolve_with_the_pods_search_domains(sandbox) -> None:
    out = traced(sandbox, ["curl", "-sS", "--noproxy", "*", "http://api/"])
    assert out.returncode == 0, out.stderr
    assert out.stdout == sandbox.service_body


def test_dial_reports_the_original_peer_and_a_pod_side_local_address(sandbox) -> None:
    probe = str(example_binary("probe-go"))
    out = traced(sandbox, [probe, "dial", f"{sandbox.target_addr}:{sandbox.app_port}"])
    assert out.returncode == 0, out.stderr
    found = re.fullmatch(r"local=(\S+):(\d+) remote=(\S+)\n", out.stdout)
    assert found, out.stdout
    # Seen from the pod, the app's own address is local; from this machine it is the veth's.
    assert found.group(1) == sandbox.target_addr
    assert found.group(3) == f"{sandbox.target_addr}:{sandbox.app_port}"
    direct = native([probe, "dial", f"{sandbox.target_addr}:{sandbox.app_port}"])
    assert direct.stdout.startswith(f"local={sandbox.host_addr}:")


@pytest.mark.parametrize("probe", ["probe-go", "probe-static", "probe-musl"])
def test_refused_remote_port_gives_econnrefused(sandbox, probe: str) -> None:
    """Port 81 is closed in the pod; from this machine the address is not even reachable."""
    binary = str(example_binary(probe))
    argv = ([binary, "dial", f"{sandbox.service_addr}:81"] if probe == "probe-go"
            else [binary, "connect", sandbox.service_addr, "81"])
    out = traced(sandbox, argv)
    assert out.stdout.strip() == "ECONNREFUSED", out.stderr
    assert out.returncode == errno.ECONNREFUSED


def test_non_blocking_connect_failure_is_einprogress_then_so_error(sandbox, tmp_path) -> None:
    trace = tmp_path / "trace.txt"
    probe = str(example_binary("probe-go"))
    out = traced(sandbox, [probe, "dial", f"{sandbox.service_addr}:81"],
                 flags=["--trace", str(trace)])
    assert out.stdout.strip() == "ECONNREFUSED"
    (connect,) = trace_lines(trace, "connect")
    assert connect.endswith("= -1 EINPROGRESS") and "remote" in connect
    so_error = [line for line in trace_lines(trace, "getsockopt") if "emulate" in line]
    assert so_error and "ECONNREFUSED" in so_error[0]


def test_non_blocking_connect_success_is_einprogress_then_connected(sandbox, tmp_path) -> None:
    trace = tmp_path / "trace.txt"
    out = traced(sandbox, [str(example_binary("probe-go")), "http-get",
                           f"http://{sandbox.service_addr}/"], flags=["--trace", str(trace)])
    assert out.stdout == sandbox.service_body
    (connect,) = trace_lines(trace, "connect")
    assert connect.endswith("= -1 EINPROGRESS")


def test_unreachable_network_in_the_pod_gives_enetunreach(sandbox, tmp_path) -> None:
    """The pod has no IPv6 route: the agent's connect fails at once, and so does the program's."""
    trace = tmp_path / "trace.txt"
    out = traced(sandbox, [str(example_binary("probe-go")), "dial", "[2001:db8::1]:80"],
                 flags=["--trace", str(trace)])
    assert out.stdout.strip() == "ENETUNREACH", out.stderr
    assert out.returncode == errno.ENETUNREACH
    (connect,) = trace_lines(trace, "connect")
    assert "remote" in connect and connect.endswith("ENETUNREACH")


def _echo_remote_addr(sandbox, host: str, **options) -> str:
    """What the pod's app saw as the client address of a GET to /cgi-bin/echo."""
    url = f"http://{host}:{sandbox.app_port}/cgi-bin/echo"
    out = traced(sandbox, _http_get("probe-go", url), **options)
    assert out.returncode == 0, out.stderr
    found = re.search(r"^remote=(\S+)$", out.stdout, re.MULTILINE)
    assert found, out.stdout
    # busybox httpd listens on a dual-stack socket: IPv4 clients show as [::ffff:a.b.c.d].
    return found.group(1).removeprefix("[::ffff:").removesuffix("]")


def test_connections_leave_from_the_pod_by_default(sandbox) -> None:
    assert _echo_remote_addr(sandbox, sandbox.target_addr) == sandbox.target_addr


def test_local_filter_connects_directly_from_this_machine(sandbox, tmp_path) -> None:
    config = {"feature": {"network": {"outgoing": {"filter": {
        "local": [f"tcp://{sandbox.target_addr}:{sandbox.app_port}"]}}}}}
    seen = _echo_remote_addr(sandbox, sandbox.target_addr, config=config, work_dir=tmp_path)
    assert seen == sandbox.host_addr


def test_local_filter_by_host_name_matches_what_the_program_resolved(sandbox, tmp_path) -> None:
    config = {"feature": {"network": {"outgoing": {"filter": {"local": [APP_NAME]}}}}}
    assert _echo_remote_addr(sandbox, APP_NAME, config=config, work_dir=tmp_path) == \
        sandbox.host_addr
    # The service, not named in the filter, is still reached through the pod.
    out = traced(sandbox, _http_get("probe-go", f"http://{SERVICE_NAME}/"), config=config,
                 work_dir=tmp_path)
    assert out.stdout == sandbox.service_body


def test_remote_filter_sends_only_matches_through_the_target(sandbox, tmp_path) -> None:
    config = {"feature": {"network": {"outgoing": {"filter": {
        "remote": [f"tcp://{sandbox.service_addr}/24:80"]}}}}}
    out = traced(sandbox, _http_get("probe-go", f"http://{SERVICE_NAME}/"), config=config,
                 work_dir=tmp_path)
    assert out.stdout == sandbox.service_body
    seen = _echo_remote_addr(sandbox, sandbox.target_addr, config=config, work_dir=tmp_path)
    assert seen == sandbox.host_addr


@pytest.mark.parametrize("flag", ["--no-outgoing", "--no-tcp-outgoing"])
def test_tcp_kept_local_by_flag_cannot_reach_the_service(sandbox, flag: str) -> None:
    probe = str(example_binary("probe-go"))
    out = traced(sandbox, [probe, "dial", f"{sandbox.service_addr}:80"], flags=[flag])
    assert out.stdout.strip() == "EHOSTUNREACH"
    # Names still resolve through the pod: DNS is its own feature.
    resolved = traced(sandbox, [probe, "resolve", SERVICE_NAME], flags=[flag])
    assert resolved.stdout.split() == [sandbox.service_addr]


def test_loopback_stays_local_unless_the_remote_filter_names_it(sandbox, tmp_path) -> None:
    url = f"http://[::1]:{sandbox.app_port}/"
    config = {"feature": {"network": {"outgoing": {"filter": {
        "remote": [f"[::1]:{sandbox.app_port}"]}}}}}
    through_pod = traced(sandbox, _http_get("curl", url), config=config, work_dir=tmp_path)
    assert through_pod.stdout == sandbox.app_body, through_pod.stderr
    stays_local = traced(sandbox, _http_get("curl", url))
    assert sandbox.app_body not in stays_local.stdout
    ignored = {"feature": {"network": {"outgoing": {
        "ignore_localhost": True, "filter": {"remote": [f"[::1]:{sandbox.app_port}"]}}}}}
    still_local = traced(sandbox, _http_get("curl", url), config=ignored, work_dir=tmp_path)
    assert sandbox.app_body not in still_local.stdout


def test_unix_sockets_stay_local(sandbox, tmp_path) -> None:
    """A unix socket server on this machine answers a traced client."""
    import socket
    import threading

    path = tmp_path / "server.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(1)

    def answer() -> None:
        connection, _ = server.accept()
        with connection:
            connection.recv(1024)
            connection.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\nlocal\n")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        out = traced(sandbox, ["curl", "-sS", "--unix-socket", str(path), "http://x/"])
    finally:
        server.close()
    assert out.stdout == "local\n", out.stderr


def test_busybox_nc_gets_the_tcp_echo(sandbox) -> None:
    busybox = str(example_binary("busybox"))
    script = (f"echo ping-through-the-pod | {busybox} nc -w 2 {sandbox.service_addr} "
              f"{sandbox.echo_port}")
    out = traced(sandbox, [busybox, "sh", "-c", script])
    assert out.stdout == "ping-through-the-pod\n", out.stderr


def test_getpeername_and_getsockname_in_the_trace(sandbox, tmp_path) -> None:
    trace = tmp_path / "trace.txt"
    traced(sandbox, [str(example_binary("probe-go")), "dial", f"{sandbox.service_addr}:80"],
           flags=["--trace", str(trace)])
    peer = [line for line in trace_lines(trace, "getpeername") if "emulate" in line]
    assert peer and f"{sandbox.service_addr}:80" in peer[0]
    local = [line for line in trace_lines(trace, "getsockname") if "emulate" in line]
    assert local and sandbox.service_addr in local[0]


def test_large_download_arrives_intact(sandbox, tmp_path: Path) -> None:
    size = 64 * 1024 * 1024
    out = traced(sandbox, [str(example_binary("probe-go")), "fetch",
                           f"http://{sandbox.service_addr}/bytes/{size}"])
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"bytes={size} ")


# Reads a request, then resets the connection (SO_LINGER 0) instead of answering.
RESETTING_SERVER = r"""
import socket, struct, sys
server = socket.create_server((sys.argv[1], 0))
print(server.getsockname()[1], flush=True)
while True:
    connection, _ = server.accept()
    connection.recv(65536)
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.close()
"""


def test_a_reset_by_the_remote_peer_reaches_the_program_as_econnreset(sandbox) -> None:
    with pod_server(sandbox, RESETTING_SERVER, sandbox.service_addr) as port:
        out = traced(sandbox, [str(example_binary("probe-go")), "http-get",
                               f"http://{sandbox.service_addr}:{port}/"])
    assert out.returncode == errno.ECONNRESET, out.stderr
    assert "connection reset by peer" in out.stderr


def test_connections_fail_cleanly_once_the_agent_is_gone(sandbox) -> None:
    """The agent dies between two dials: the session ends (docs/troubleshooting.md), so the
    second dial never reaches anything; mirrord-trace says why and exits with its status."""
    import signal
    import subprocess

    from mirrord_trace.agent_loss import EXIT_AGENT_LOST
    from tests.test_outgoing_support import MIRRORD_TRACE

    probe = str(example_binary("probe-go"))
    address = f"{sandbox.service_addr}:80"
    script = f"{probe} dial {address} && echo first-done && sleep 3 && {probe} dial {address}"
    supervisor = subprocess.Popen(
        [MIRRORD_TRACE, "exec", "--target", f"pid/{sandbox.target_pid}", "--",
         str(example_binary("busybox")), "sh", "-c", script],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert supervisor.stdout is not None
        assert supervisor.stdout.readline().startswith("local=")
        assert supervisor.stdout.readline() == "first-done\n"
        children = Path(f"/proc/{supervisor.pid}/task").glob("*/children")
        agents = [int(pid) for task in children for pid in task.read_text().split()
                  if b"agent" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert agents, "the agent process was not found"
        for agent in agents:
            os.kill(agent, signal.SIGKILL)
        out, err = supervisor.communicate(timeout=60)
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.communicate()
    assert "local=" not in out  # no second connection
    assert supervisor.returncode == EXIT_AGENT_LOST
    assert "lost the connection to the agent" in err
