"""The sandbox pod behaves like a pod: what the host cannot see, the pod can, and vice versa."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mirrord_trace.sandbox import SandboxInfo, run_in_sandbox_netns, run_in_target

# Queries the pod's DNS server directly (from inside its network namespace) and prints, per
# query, the response code and the answers, so the test sees exactly what the server says.
_DNS_QUERY_SCRIPT = """
import json, socket, sys
from scapy.layers.dns import DNS, DNSQR
server, queries = sys.argv[1], json.loads(sys.argv[2])
results = []
for name, qtype in queries:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.sendto(bytes(DNS(rd=1, qd=DNSQR(qname=name, qtype=qtype))), (server, 53))
        reply = DNS(sock.recv(4096))
    answers = []
    for number in range(reply.ancount):
        data = reply.an[number].rdata
        if isinstance(data, list):
            data = b"".join(data)
        answers.append(data.decode() if isinstance(data, bytes) else str(data))
    results.append({"rcode": reply.rcode, "answers": answers})
print(json.dumps(results))
"""

# Talks to the cluster-only service from inside the namespace: HTTP GET and POST, TCP and UDP echo.
_SERVICE_CLIENT_SCRIPT = """
import json, socket, sys, urllib.request
address, http_port, echo_port, body = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
base = f"http://{address}:{http_port}"
get = urllib.request.urlopen(base + "/", timeout=5).read().decode()
request = urllib.request.Request(base + "/echo?q=1", data=body.encode(), method="POST",
                                 headers={"X-Probe": "sandbox-test"})
echo = json.loads(urllib.request.urlopen(request, timeout=5).read())
with socket.create_connection((address, echo_port), timeout=5) as tcp:
    tcp.sendall(b"tcp-ping")
    tcp_reply = tcp.recv(100).decode()
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
    udp.settimeout(5)
    udp.sendto(b"udp-ping", (address, echo_port))
    udp_reply, udp_peer = udp.recvfrom(100)
print(json.dumps({"get": get, "echo": echo, "tcp": tcp_reply, "udp": udp_reply.decode(),
                  "udp_peer": list(udp_peer)}))
"""


def _all_names(sandbox: SandboxInfo) -> list[str]:
    return [*sandbox.names, *sandbox.multi_names, *sandbox.hosts_entries]


def test_cluster_names_do_not_resolve_on_the_host(sandbox: SandboxInfo) -> None:
    for name in _all_names(sandbox):
        with pytest.raises(socket.gaierror):
            socket.getaddrinfo(name, 80)


def test_cluster_only_addresses_fail_fast_from_the_host(sandbox: SandboxInfo) -> None:
    for address, port in [(sandbox.service_addr, sandbox.service_port),
                          (sandbox.dns_addr, sandbox.dns_port)]:  # fmt: skip
        started = time.monotonic()
        with pytest.raises(OSError) as raised:
            socket.create_connection((address, port), timeout=5).close()
        assert raised.value.errno == errno.EHOSTUNREACH
        assert time.monotonic() - started < 1


def test_pod_dns_server_answers_cluster_names_and_nothing_else(sandbox: SandboxInfo) -> None:
    queries = [[name, "A"] for name in [*sandbox.names, *sandbox.multi_names]]
    queries += [[name, "TXT"] for name in sandbox.txt_records]
    unknown = ["example.com", "legacy-api.internal", f"nope.{sandbox.search_domains[0]}"]
    queries += [[name, "A"] for name in unknown]
    result = run_in_sandbox_netns(
        [sys.executable, "-c", _DNS_QUERY_SCRIPT, sandbox.dns_addr, json.dumps(queries)],
        name=sandbox.name, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    replies = dict(zip(map(tuple, queries), json.loads(result.stdout), strict=True))
    for name, address in sandbox.names.items():
        assert replies[name, "A"] == {"rcode": 0, "answers": [address]}
    for name, addresses in sandbox.multi_names.items():
        assert replies[name, "A"]["rcode"] == 0
        assert sorted(replies[name, "A"]["answers"]) == sorted(addresses)
    for name, text in sandbox.txt_records.items():
        assert replies[name, "TXT"] == {"rcode": 0, "answers": [text]}
    for name in unknown:
        assert replies[name, "A"] == {"rcode": 3, "answers": []}, f"{name} must be NXDOMAIN"
    # Queries reach the real server: it logs them.
    assert "query[TXT] app.default.svc.cluster.local" in sandbox.dns_log.read_text()


def test_target_resolves_like_a_pod_through_its_resolv_conf_and_hosts(
    sandbox: SandboxInfo,
) -> None:
    def fetch(url: str) -> str:
        result = run_in_target(
            ["/bin/busybox", "wget", "-q", "-O", "-", url],
            name=sandbox.name, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout

    # Full cluster name, short name through the search domains, and a pod-only /etc/hosts name.
    assert fetch("http://api.default.svc.cluster.local/") == sandbox.service_body
    assert fetch("http://api/") == sandbox.service_body
    assert fetch("http://legacy-api.internal/") == sandbox.service_body
    lookup = run_in_target(
        ["/bin/busybox", "nslookup", "db.default.svc.cluster.local"],
        name=sandbox.name, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert f"Address: {sandbox.names['db.default.svc.cluster.local']}" in lookup.stdout


def test_cluster_service_answers_inside_the_namespace(sandbox: SandboxInfo) -> None:
    body = "payload " * 1000
    result = run_in_sandbox_netns(
        [sys.executable, "-c", _SERVICE_CLIENT_SCRIPT, sandbox.service_addr,
         str(sandbox.service_port), str(sandbox.echo_port), body],
        name=sandbox.name, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    seen = json.loads(result.stdout)
    assert seen["get"] == sandbox.service_body
    echo = seen["echo"]
    assert (echo["method"], echo["path"]) == ("POST", "/echo?q=1")
    assert ["X-Probe", "sandbox-test"] in echo["headers"]
    assert echo["body_length"] == len(body)
    assert echo["body_sha256"] == hashlib.sha256(body.encode()).hexdigest()
    assert (seen["tcp"], seen["udp"]) == ("tcp-ping", "udp-ping")
    assert seen["udp_peer"] == [sandbox.service_addr, sandbox.echo_port]


def _namespace(pid: int | str, kind: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{kind}")


def test_target_is_a_separate_process_in_the_pod(sandbox: SandboxInfo) -> None:
    pid = sandbox.target_pid
    assert os.readlink(f"/proc/{pid}/root") == str(sandbox.root)
    netns_inode = os.stat(sandbox.netns_path).st_ino
    assert os.stat(f"/proc/{pid}/ns/net").st_ino == netns_inode
    for kind in ("mnt", "uts", "net"):
        assert _namespace(pid, kind) != _namespace("self", kind)
    environ = dict(
        entry.split("=", 1)
        for entry in Path(f"/proc/{pid}/environ").read_text().split("\0")
        if entry
    )
    assert environ["APP_SECRET"] == sandbox.app_secret
    assert environ["DATABASE_URL"] == "postgres://db.default.svc.cluster.local:5432/app"
    assert (environ["APP_MODE"], environ["PATH"], environ["HOME"]) == ("sandbox", "/bin", "/root")
    assert environ["PYTHONPATH"] == "/pod/only"
    assert environ == sandbox.env
    assert os.environ.get("APP_SECRET") != sandbox.app_secret


def test_target_root_holds_the_pod_files(sandbox: SandboxInfo) -> None:
    through_target = Path(f"/proc/{sandbox.target_pid}/root")
    for pod_path, content in sandbox.files.items():
        assert (through_target / pod_path.lstrip("/")).read_text() == content, pod_path
    for pod_path, link_text in sandbox.symlinks.items():
        assert os.readlink(through_target / pod_path.lstrip("/")) == link_text, pod_path
    assert (through_target / "app/current/greeting.txt").read_text() == (
        sandbox.files["/app/data/greeting.txt"]
    )
    items = sorted(p for p in sandbox.files if p.startswith("/app/data/items/"))
    assert len(items) >= 5
    assert sorted(os.listdir(through_target / "app/data/items")) == [Path(p).name for p in items]
    large = (through_target / sandbox.large_file.lstrip("/")).read_bytes()
    assert len(large) == sandbox.large_file_size == 4 * 1024 * 1024
    assert hashlib.sha256(large).hexdigest() == sandbox.large_file_sha256
    assert (through_target / "etc/resolv.conf").read_text().startswith(
        "search default.svc.cluster.local svc.cluster.local cluster.local\n"
        f"nameserver {sandbox.dns_addr}\n"
    )
    # The host has none of it.
    assert not Path("/app/data/greeting.txt").exists()


def test_absolute_symlink_resolves_inside_the_pod_only(sandbox: SandboxInfo) -> None:
    inside = run_in_target(
        ["/bin/busybox", "cat", "/app/config-link.yaml"],
        name=sandbox.name, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert inside.stdout == sandbox.files["/app/config.yaml"]
    # Followed from the host, the link leaves the pod's root (why the agent confines lookups).
    assert not sandbox.pod_path("/app/config-link.yaml").exists()


def test_target_has_the_pods_hostname(sandbox: SandboxInfo) -> None:
    result = run_in_target(
        ["/bin/busybox", "hostname"], sandbox, capture_output=True, text=True, timeout=30
    )
    assert result.stdout.strip() == sandbox.hostname == "app-7f9c"
    assert socket.gethostname() != sandbox.hostname


def test_host_reaches_the_target_app_port_directly(sandbox: SandboxInfo) -> None:
    with urllib.request.urlopen(sandbox.app_url, timeout=5) as response:
        assert response.read().decode() == sandbox.app_body
    with urllib.request.urlopen(sandbox.app_url + "cgi-bin/echo?from=host", timeout=5) as response:
        lines = response.read().decode().splitlines()
    assert "uri=/cgi-bin/echo?from=host" in lines
    assert f"hostname={sandbox.hostname}" in lines
    assert any(line.startswith("remote=") and sandbox.host_addr in line for line in lines)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mirrord_trace.sandbox", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_status_json_describes_the_running_sandbox(sandbox: SandboxInfo) -> None:
    result = _cli("status", "--name", sandbox.name, "--json")
    assert result.returncode == 0, result.stderr
    reported = json.loads(result.stdout)
    assert reported["healthy"] is True and reported["problems"] == []
    assert reported["target_pid"] == sandbox.target_pid
    for key in ("name", "netns", "host_addr", "target_addr", "app_port", "dns_addr",
                "service_addr", "names", "app_secret", "hosts_entries", "large_file_sha256"):
        assert reported[key] == getattr(sandbox, key), key  # fmt: skip
    assert reported["root"] == str(sandbox.root)


def test_status_summary_is_readable(sandbox: SandboxInfo) -> None:
    result = _cli("status", "--name", sandbox.name)
    assert result.returncode == 0, result.stderr
    assert f"sandbox {sandbox.name}: up" in result.stdout
    for expected in (f"pid {sandbox.target_pid}", sandbox.app_secret, sandbox.dns_addr,
                     "db.default.svc.cluster.local -> " + sandbox.service_addr):
        assert expected in result.stdout  # fmt: skip


def test_up_reports_a_sandbox_already_up(sandbox: SandboxInfo) -> None:
    result = _cli("up", "--name", sandbox.name)
    assert result.returncode == 0
    assert f"already up (target pid {sandbox.target_pid})" in result.stderr
    assert os.readlink(f"/proc/{sandbox.target_pid}/root") == str(sandbox.root)
