"""Names resolve as they would inside the pod: Go's resolver, musl and glibc; the DNS filter
and --no-remote-dns send names to this machine's resolver instead.

"This machine's resolver" is a DNS server the test runs on a loopback address; the command
under test sees it through /etc/resolv.conf bind-mounted in a private mount namespace, so
nothing outside that one command changes.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import example_binary
from tests.test_outgoing_support import PYTHON, HostResolver, LocalHttpServer, traced

SERVICE_NAME = "api.default.svc.cluster.local"
APP_NAME = "app.default.svc.cluster.local"
HOST_ONLY_NAME = "only-on-the-host.test"
HOST_ANSWER_FOR_APP = "127.0.0.1"
_resolver_addresses = itertools.count(77)

PROBES = ["probe-go", "probe-musl", "probe-static", "probe-dynamic"]


@pytest.fixture
def host_resolver() -> Iterator[HostResolver]:
    # A loopback address per test (and per pytest process) keeps parallel runs apart.
    address = f"127.{os.getpid() % 200 + 20}.{next(_resolver_addresses) % 250}.53"
    resolver = HostResolver(address, {HOST_ONLY_NAME: "10.99.0.7",
                                      APP_NAME: HOST_ANSWER_FOR_APP})
    yield resolver
    resolver.close()


def _resolve(sandbox, probe: str, name: str, **options) -> list[str]:
    out = traced(sandbox, [str(example_binary(probe)), "resolve", name], **options)
    return out.stdout.split() if out.returncode == 0 else []


@pytest.mark.parametrize("probe", PROBES)
def test_cluster_names_resolve_to_the_pods_answers(sandbox, probe: str) -> None:
    for name, address in sandbox.names.items():
        assert address in _resolve(sandbox, probe, name), name


@pytest.mark.parametrize("probe", ["probe-go", "probe-musl"])
def test_a_name_with_several_records_gets_all_of_them(sandbox, probe: str) -> None:
    ((name, addresses),) = sandbox.multi_names.items()
    assert sorted(set(_resolve(sandbox, probe, name))) == sorted(addresses)


def test_busybox_nslookup_asks_the_pods_nameserver(sandbox) -> None:
    busybox = str(example_binary("busybox"))
    out = traced(sandbox, [busybox, "nslookup", SERVICE_NAME])
    assert sandbox.service_addr in out.stdout, out.stdout + out.stderr


# Raw DNS over UDP (unconnected, reply source checked, as musl does) and over TCP (the retry
# after a truncated answer), to the nameserver named on the command line.
RAW_QUERY = r'''
import socket, struct, sys
from scapy.layers.dns import DNS, DNSQR

transport, server, name = sys.argv[1:4]
query = bytes(DNS(id=4242, rd=1, qd=DNSQR(qname=name)))
if transport == "udp":
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(5)
    sock.sendto(query, (server, 53))
    answer, source = sock.recvfrom(65535)
    print("source", "%s:%d" % source)
else:
    sock = socket.create_connection((server, 53), timeout=5)
    sock.sendall(struct.pack(">H", len(query)) + query)
    size = struct.unpack(">H", sock.recv(2))[0]
    answer = b""
    while len(answer) < size:
        answer += sock.recv(size - len(answer))
reply = DNS(answer)
print("id", reply.id)
for record in reply.an or []:
    print("answer", record.rdata)
'''


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_raw_queries_to_the_pods_nameserver(sandbox, tmp_path: Path, transport: str) -> None:
    script = tmp_path / "raw_query.py"
    script.write_text(RAW_QUERY)
    out = traced(sandbox, [PYTHON, str(script), transport, sandbox.dns_addr, SERVICE_NAME])
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "id 4242" in lines
    assert f"answer {sandbox.service_addr}" in lines
    if transport == "udp":
        assert f"source {sandbox.dns_addr}:53" in lines


def test_dns_local_filter_sends_chosen_names_to_the_host_resolver(
    sandbox, tmp_path: Path, host_resolver: HostResolver
) -> None:
    config = {"feature": {"network": {"dns": {"filter": {"local": [APP_NAME]}}}}}
    options = {"config": config, "work_dir": tmp_path,
               "resolv_conf": host_resolver.resolv_conf(tmp_path)}
    assert _resolve(sandbox, "probe-go", APP_NAME, **options) == [HOST_ANSWER_FOR_APP]
    assert APP_NAME in host_resolver.asked
    # Names the filter does not match are still answered by the pod.
    assert _resolve(sandbox, "probe-musl", SERVICE_NAME, **options) == [sandbox.service_addr]
    assert SERVICE_NAME not in host_resolver.asked


def test_dns_remote_filter_resolves_only_matches_in_the_pod(
    sandbox, tmp_path: Path, host_resolver: HostResolver
) -> None:
    config = {"feature": {"network": {"dns": {"filter": {"remote": [SERVICE_NAME]}}}}}
    options = {"config": config, "work_dir": tmp_path,
               "resolv_conf": host_resolver.resolv_conf(tmp_path)}
    assert _resolve(sandbox, "probe-static", SERVICE_NAME, **options) == [sandbox.service_addr]
    assert _resolve(sandbox, "probe-static", HOST_ONLY_NAME, **options) == ["10.99.0.7"]


def test_locally_resolved_name_connects_locally(
    sandbox, tmp_path: Path, host_resolver: HostResolver
) -> None:
    """The host resolver says app.* is 127.0.0.1, where this machine serves its own page."""
    server = LocalHttpServer("127.0.0.1", "served on this machine\n")
    try:
        config = {"feature": {"network": {"dns": {"filter": {"local": [APP_NAME]}}}}}
        out = traced(sandbox, [str(example_binary("probe-go")), "http-get",
                               f"http://{APP_NAME}:{server.port}/"],
                     config=config, work_dir=tmp_path,
                     resolv_conf=host_resolver.resolv_conf(tmp_path))
    finally:
        server.close()
    assert out.stdout == "served on this machine\n", out.stderr


@pytest.mark.parametrize("probe", ["probe-go", "probe-musl", "probe-dynamic"])
def test_no_remote_dns_asks_the_host_resolver(
    sandbox, tmp_path: Path, host_resolver: HostResolver, probe: str
) -> None:
    options = {"flags": ["--no-remote-dns"], "resolv_conf": host_resolver.resolv_conf(tmp_path)}
    assert _resolve(sandbox, probe, SERVICE_NAME, **options) == []
    assert _resolve(sandbox, probe, HOST_ONLY_NAME, **options) == ["10.99.0.7"]
    assert HOST_ONLY_NAME in host_resolver.asked


def test_names_of_the_pods_hosts_file_resolve(sandbox) -> None:
    for name, address in sandbox.hosts_entries.items():
        assert _resolve(sandbox, "probe-go", name) == [address], name
