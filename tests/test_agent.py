"""The agent against a real target: a process in its own network namespace and root."""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator

import pytest
from scapy.layers.dns import DNS, DNSQR

from mirrord_trace.agent_client import AgentClient, RemoteError
from mirrord_trace.local_target import LocalAgent
from mirrord_trace.protocol import INLINE_READ_LIMIT, MAX_READ_SIZE
from mirrord_trace.protocol.requests import DT_DIR, DT_LNK, DT_REG
from tests.test_agent_support import SOURCE_BYTES, TARGET_ENV, Target, running_target


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    with running_target() as running:
        yield running


@pytest.fixture(scope="module")
def agent(target: Target) -> Iterator[LocalAgent]:
    local_agent = LocalAgent(target.pid)
    with local_agent:
        yield local_agent


@pytest.fixture(scope="module")
def client(agent: LocalAgent) -> AgentClient:
    assert agent.client is not None
    return agent.client


def remote_errno(call, *args, **kwargs) -> int:
    with pytest.raises(RemoteError) as caught:
        call(*args, **kwargs)
    return caught.value.errno


def test_env_is_the_targets_environment(client: AgentClient) -> None:
    env = client.request("env")["env"]
    assert {os.fsencode(k): os.fsencode(v) for k, v in env.items()} == TARGET_ENV


def test_small_file_comes_inline_with_its_metadata(client: AgentClient, target: Target) -> None:
    reply = client.request("fs.open_read", path="/etc/hostname")
    on_disk = os.stat(target.root / "etc/hostname")
    assert reply["content"] == b"target-host\n"
    assert "handle" not in reply
    assert stat.S_ISREG(reply["stat"]["mode"])
    assert (reply["stat"]["size"], reply["stat"]["ino"]) == (on_disk.st_size, on_disk.st_ino)
    assert reply["stat"]["mtime_ns"] == on_disk.st_mtime_ns


def test_large_file_is_read_in_chunks(client: AgentClient, target: Target) -> None:
    reply = client.request("fs.open_read", path="/data/big.bin")
    assert len(reply["content"]) == INLINE_READ_LIMIT
    digest = hashlib.sha256(reply["content"])
    offset, handle = len(reply["content"]), reply["handle"]
    while chunk := client.request("fs.read", handle=handle, offset=offset, size=MAX_READ_SIZE)[
        "data"
    ]:
        digest.update(chunk)
        offset += len(chunk)
    assert offset == reply["stat"]["size"]
    assert digest.hexdigest() == target.big_file_sha256
    client.request("fs.close", handle=handle)
    assert remote_errno(client.request, "fs.read", handle=handle, offset=0, size=1) == errno.EBADF


def test_stat_follows_links_only_when_asked(client: AgentClient) -> None:
    followed = client.request("fs.stat", path="/data/link-to-small")["stat"]
    not_followed = client.request("fs.stat", path="/data/link-to-small", follow=False)["stat"]
    assert stat.S_ISREG(followed["mode"])
    assert followed["size"] == len("small file inside the target\n")
    assert stat.S_ISLNK(not_followed["mode"])


def test_readlink_returns_the_link_text(client: AgentClient) -> None:
    assert client.request("fs.readlink", path="/data/absolute-link")["target"] == "/data/small.txt"
    assert remote_errno(client.request, "fs.readlink", path="/data/small.txt") == errno.EINVAL


def test_listdir_reports_names_types_and_inodes(client: AgentClient, target: Target) -> None:
    entries = {e["name"]: e for e in client.request("fs.listdir", path="/data")["entries"]}
    expected = {".", "..", *os.listdir(target.root / "data")}
    assert set(entries) == expected
    assert entries["subdir"]["type"] == DT_DIR
    assert entries["link-to-small"]["type"] == DT_LNK
    assert entries["small.txt"]["type"] == DT_REG
    assert entries["small.txt"]["ino"] == os.lstat(target.root / "data/small.txt").st_ino
    assert entries["."]["ino"] == os.stat(target.root / "data").st_ino
    assert entries[".."]["ino"] == os.stat(target.root).st_ino


@pytest.mark.parametrize(
    ("kind", "fields", "expected"),
    [
        ("fs.stat", {"path": "/no/such/file"}, errno.ENOENT),
        ("fs.open_read", {"path": "/data/small.txt/below"}, errno.ENOTDIR),
        ("fs.open_read", {"path": "/data/loop"}, errno.ELOOP),
        ("fs.open_read", {"path": "/data/link-to-small", "flags": os.O_NOFOLLOW}, errno.ELOOP),
        ("fs.open_read", {"path": "/data/small.txt", "flags": os.O_DIRECTORY}, errno.ENOTDIR),
        ("fs.listdir", {"path": "/data/small.txt"}, errno.ENOTDIR),
        ("fs.readlink", {"path": "/nothing"}, errno.ENOENT),
    ],
)
def test_failures_carry_the_errno(client: AgentClient, kind: str, fields: dict, expected) -> None:
    assert remote_errno(client.request, kind, **fields) == expected


@pytest.mark.parametrize(
    ("path", "mode", "expected"),
    [
        ("/data/private.txt", os.R_OK, errno.EACCES),  # root's 0600 file, target is uid 1000
        ("/data/owned-by-target.txt", os.R_OK | os.W_OK, None),
        ("/bin/tool", os.X_OK, None),
        ("/data/small.txt", os.X_OK, errno.EACCES),
        ("/data/small.txt", os.R_OK, None),
        ("/missing", os.F_OK, errno.ENOENT),
    ],
)
def test_access_is_checked_as_the_targets_user(client: AgentClient, path, mode, expected) -> None:
    if expected is None:
        assert client.request("fs.access", path=path, mode=mode) == {}
    else:
        assert remote_errno(client.request, "fs.access", path=path, mode=mode) == expected


@pytest.mark.parametrize("path", ["/data/escape", "/data/host-path", "/../../secret.txt"])
def test_paths_leading_out_of_the_root_stay_inside(client: AgentClient, path: str) -> None:
    # Inside the root these name /secret.txt (or the host path), which does not exist there.
    assert remote_errno(client.request, "fs.open_read", path=path) == errno.ENOENT


def test_absolute_links_resolve_inside_the_root(client: AgentClient) -> None:
    reply = client.request("fs.open_read", path="/data/absolute-link")
    assert reply["content"] == b"small file inside the target\n"


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_dns_query_goes_to_the_targets_nameserver(client: AgentClient, transport: str) -> None:
    query = DNS(id=4242, rd=1, qd=DNSQR(qname="web.svc.cluster.test", qtype="A"))
    reply = client.request(
        "dns.query", payload=bytes(query), nameserver="127.0.0.1", transport=transport
    )
    answer = DNS(reply["payload"])
    assert answer.id == 4242
    assert answer.an[0].rdata == "10.96.0.10"


def test_dns_query_to_a_closed_port_is_refused(client: AgentClient) -> None:
    query = bytes(DNS(id=1, rd=1, qd=DNSQR(qname="x.svc.cluster.test")))
    code = remote_errno(
        client.request, "dns.query", payload=query, nameserver="127.0.0.1", port=9, timeout=2.0
    )
    assert code == errno.ECONNREFUSED


def test_connect_reaches_a_listener_only_in_the_targets_namespace(
    client: AgentClient, target: Target
) -> None:
    port = target.ports["echo"]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    stream = client.open_stream(family=socket.AF_INET, host="127.0.0.1", port=port)
    with stream.socket as sock:
        sock.sendall(b"ping from the local side")
        assert sock.recv(100) == b"ping from the local side"
    assert stream.info["peer"] == ["127.0.0.1", port]
    assert stream.info["local"][0] == "127.0.0.1"


def _receive_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def test_connect_moves_megabytes_both_ways_and_half_closes(
    client: AgentClient, target: Target
) -> None:
    payload = os.urandom(3 * 1024 * 1024)
    stream = client.open_stream(family=socket.AF_INET, host="127.0.0.1", port=target.ports["echo"])
    with stream.socket as sock:
        sock.settimeout(30)

        def send_then_shut() -> None:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send_then_shut)
        sender.start()
        echoed = _receive_all(sock)  # ends when the echo server closes after our EOF
        sender.join()
    assert echoed == payload


def test_connect_to_a_closed_port_is_refused(client: AgentClient) -> None:
    code = remote_errno(client.open_stream, family=socket.AF_INET, host="127.0.0.1", port=1)
    assert code == errno.ECONNREFUSED


def test_connect_to_an_unroutable_network_fails(client: AgentClient) -> None:
    # The target's namespace has only a loopback interface.
    code = remote_errno(client.open_stream, family=socket.AF_INET, host="192.0.2.1", port=80)
    assert code == errno.ENETUNREACH


def test_udp_stream_keeps_datagram_boundaries(client: AgentClient, target: Target) -> None:
    stream = client.open_stream(
        family=socket.AF_INET, host="127.0.0.1", port=target.ports["udp_echo"], transport="udp"
    )
    with stream.socket as sock:
        sock.settimeout(5)
        for size in (1, 512, 1400, 30000):
            datagram = os.urandom(size)
            sock.send(datagram)
            assert sock.recv(65536) == datagram


def _agent_rss(agent: LocalAgent) -> int:
    assert agent.process is not None
    with open(f"/proc/{agent.process.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_slow_reader_stalls_neither_other_streams_nor_memory(
    client: AgentClient, agent: LocalAgent, target: Target
) -> None:
    rss_before = _agent_rss(agent)
    flood = client.open_stream(family=socket.AF_INET, host="127.0.0.1", port=target.ports["source"])
    with flood.socket as unread:
        time.sleep(1.0)  # the source pushes as fast as it can; nobody reads
        echo = client.open_stream(
            family=socket.AF_INET, host="127.0.0.1", port=target.ports["echo"]
        )
        with echo.socket as sock:
            sock.settimeout(5)
            for i in range(20):
                message = f"round trip {i}".encode()
                sock.sendall(message)
                assert sock.recv(100) == message
        # Credit stops the agent after one window, so the flood waits in kernel buffers.
        assert _agent_rss(agent) - rss_before < 8 * 1024 * 1024
        unread.settimeout(30)
        received = _receive_all(unread)
    pattern = bytes(range(256)) * (SOURCE_BYTES // 256)
    assert len(received) == SOURCE_BYTES
    assert received == pattern


def test_many_requests_in_flight_get_their_own_replies(client: AgentClient, target: Target) -> None:
    names = sorted(os.listdir(target.root / "data"))
    futures = [
        (name, client.request_async("fs.stat", path=f"/data/{name}", follow=False))
        for name in names * 20
    ]
    for name, future in futures:
        ino = future.result(timeout=30)["stat"]["ino"]
        assert ino == os.lstat(target.root / "data" / name).st_ino


def test_stats_count_requests_by_kind(agent: LocalAgent) -> None:
    assert agent.socket_path is not None
    with agent.connect() as fresh:
        for _ in range(17):
            fresh.request("noop")
        for _ in range(5):
            fresh.request("fs.stat", path="/etc")
        counts = fresh.request("stats")
    assert counts["session"] == {"noop": 17, "fs.stat": 5, "stats": 1}
    assert counts["total"]["noop"] >= 17


@pytest.mark.parametrize(
    ("host", "family", "expected"),
    [
        ("web", socket.AF_INET, "10.96.0.10"),  # via the target's search list and ndots
        ("api.svc.cluster.test", 0, "10.96.0.10"),
        ("hosts-only.test", 0, "10.1.2.3"),  # only in the target's /etc/hosts
        ("10.0.0.7", socket.AF_INET, "10.0.0.7"),
    ],
)
def test_getaddrinfo_resolves_like_the_target(
    client: AgentClient, host: str, family: int, expected: str
) -> None:
    reply = client.request("dns.getaddrinfo", host=host, family=family)
    assert {"family": socket.AF_INET, "address": expected} in reply["addresses"]


def test_getaddrinfo_of_an_unknown_name_fails(client: AgentClient) -> None:
    code = remote_errno(client.request, "dns.getaddrinfo", host="nothing.invalid.", timeout=2.0)
    assert code in (errno.ENOENT, errno.EAGAIN)
