"""The parts of incoming traffic, each against the real kernel in a scratch network namespace:
the capture's BPF port filter, sockaddr decoding, the steal rule book and the clean-up of
rules whose agent is gone; and the port policy (mirrord's semantics), which is pure."""

from __future__ import annotations

import ctypes
import ipaddress
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.incoming.capture import PacketCapture, Segment
from agent.incoming.rules import (
    COMMENT_PREFIX,
    IPV4,
    IPV6,
    PortTaken,
    RuleBook,
    agent_tag,
    remove_abandoned_rules,
    saved_rules,
)
from agent.target.linux import CLONE_NEWNET, setns
from mirrord_trace.config.model import HttpFilterConfig, IncomingConfig, IncomingMode
from mirrord_trace.incoming.policy import IncomingPolicy, PortDecision
from mirrord_trace.net.sockaddr import InetAddress, parse_sockaddr

T = TypeVar("T")


@pytest.fixture
def scratch_netns() -> Iterator[str]:
    name = f"mtt-incoming-{os.getpid()}-{time.monotonic_ns()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield f"/run/netns/{name}"
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def in_netns(path: str, work: Callable[[], T]) -> T:
    """Run `work` in a thread that entered the namespace (setns is per thread; so are the
    sockets it creates and the processes it starts)."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                setns(fd, CLONE_NEWNET)
            finally:
                os.close(fd)
            outcome["value"] = work()
        except BaseException as error:
            outcome["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


# ---- capture -----------------------------------------------------------------------------


def _talk(family: int, host: str, port: int, payload: bytes) -> None:
    with socket.create_connection((host, port), timeout=5) as client:
        client.sendall(payload)


def test_capture_keeps_only_segments_to_subscribed_ports_once_each(scratch_netns: str) -> None:
    def work() -> list[Segment]:
        listeners = {}
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            for port in (18080, 18081):
                server = socket.socket(family)
                server.bind((host, port))
                server.listen()
                listeners[(host, port)] = server
        capture = PacketCapture()
        capture.set_ports([18080])
        _talk(socket.AF_INET, "127.0.0.1", 18080, b"wanted-v4")
        _talk(socket.AF_INET, "127.0.0.1", 18081, b"other port")
        _talk(socket.AF_INET6, "::1", 18080, b"wanted-v6")
        time.sleep(0.2)
        segments = capture.read_segments(1000)
        capture.close()
        for server in listeners.values():
            server.close()
        return segments

    segments = in_netns(scratch_netns, work)
    assert {s.destination_port for s in segments} == {18080}
    payloads = [s.payload for s in segments if s.payload]
    assert payloads == [b"wanted-v4", b"wanted-v6"]  # loopback shows each packet once, not twice
    opens = [s for s in segments if s.opens]
    assert [(s.source, s.destination) for s in opens] == [
        ("127.0.0.1", "127.0.0.1"),
        ("::1", "::1"),
    ]


def test_capture_with_no_ports_sees_nothing(scratch_netns: str) -> None:
    def work() -> list[Segment]:
        server = socket.socket()
        server.bind(("127.0.0.1", 18082))
        server.listen()
        capture = PacketCapture()
        _talk(socket.AF_INET, "127.0.0.1", 18082, b"nobody listens for this")
        time.sleep(0.1)
        try:
            return capture.read_segments()
        finally:
            capture.close()
            server.close()

    assert in_netns(scratch_netns, work) == []


# ---- sockaddr ----------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def _kernel_sockname(sock: socket.socket) -> bytes:
    buffer = ctypes.create_string_buffer(128)
    length = ctypes.c_uint32(128)
    assert _libc.getsockname(sock.fileno(), buffer, ctypes.byref(length)) == 0
    return buffer.raw[: length.value]


@pytest.mark.parametrize(
    ("family", "host"),
    [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1"), (socket.AF_INET6, "::")],
)
def test_sockaddr_decodes_what_the_kernel_writes(family: int, host: str) -> None:
    with socket.socket(family) as sock:
        sock.bind((host, 0))
        raw = _kernel_sockname(sock)
        decoded = parse_sockaddr(raw)
        assert decoded is not None
        assert decoded.sockaddr_tuple() == sock.getsockname()
        assert decoded.packed() == raw


@given(
    st.one_of(
        st.ip_addresses(v=4).map(lambda a: (socket.AF_INET, a)),
        st.ip_addresses(v=6).map(lambda a: (socket.AF_INET6, a)),
    ),
    st.integers(0, 65535),
    st.integers(0, 2**20 - 1),
    st.integers(0, 2**32 - 1),
)
def test_sockaddr_round_trips(
    address: tuple[int, ipaddress.IPv4Address | ipaddress.IPv6Address],
    port: int,
    flowinfo: int,
    scope: int,
) -> None:
    family, ip = address
    if family == socket.AF_INET:
        flowinfo = scope = 0
    original = InetAddress(ip, port, family, flowinfo, scope)
    decoded = parse_sockaddr(original.packed())
    assert decoded is not None
    assert decoded.family == family
    # The same address in the socket's own form (a v4-mapped one is parsed as its IPv4).
    assert (decoded.socket_ip, decoded.port, decoded.flowinfo, decoded.scope_id) == (
        original.socket_ip, port, flowinfo, scope,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("family", "host", "short_size"),
    [(socket.AF_INET, "10.1.2.3", 8), (socket.AF_INET6, "fe80::1", 24)],
)
def test_sockaddr_short_forms_the_kernel_accepts(family: int, host: str, short_size: int) -> None:
    # bind takes a sockaddr_in6 without its scope id (RFC 2133); accept truncates to the room.
    full = InetAddress(ipaddress.ip_address(host), 8080, family, scope_id=7).packed()
    assert parse_sockaddr(full[:short_size]) is None
    short = parse_sockaddr(full[:short_size], short_forms=True)
    assert short == InetAddress(ipaddress.ip_address(host), 8080, family)
    assert parse_sockaddr(full[: short_size - 1], short_forms=True) is None


def test_other_families_and_short_buffers_are_not_inet() -> None:
    unix = socket.AF_UNIX.to_bytes(2, "little") + b"/tmp/x\0"
    assert parse_sockaddr(unix, short_forms=True) is None
    assert parse_sockaddr(b"\x0a", short_forms=True) is None


# ---- rules -------------------------------------------------------------------------------


def _our_rules() -> list[list[str]]:
    return saved_rules(IPV4)


def test_rule_book_adds_and_removes_both_chains(scratch_netns: str) -> None:
    def work() -> tuple[list[list[str]], list[list[str]]]:
        book = RuleBook(agent_tag())
        book.redirect(8080, 40000)
        added = _our_rules()
        book.release_all()
        return added, _our_rules()

    added, after = in_netns(scratch_netns, work)
    assert sorted(rule[0] for rule in added) == ["OUTPUT", "PREROUTING"]
    assert all("8080" in rule and "40000" in rule for rule in added)
    assert after == []


def test_stale_rules_go_and_live_ones_stay(scratch_netns: str) -> None:
    sleeper = subprocess.Popen(["sleep", "60"])
    dead = subprocess.Popen(["true"])
    dead.wait()
    try:

        def work() -> list[str]:
            live_book = RuleBook(agent_tag(sleeper.pid))
            live_book.redirect(8081, 40001)
            # A dead agent's rules: its pid with a start time it never had.
            stale_tag = f"{COMMENT_PREFIX}{dead.pid}/1"
            RuleBook(stale_tag).redirect(8082, 40002)
            stale = [r for f in (IPV4, IPV6) for r in saved_rules(f) if stale_tag in r]
            assert len(stale) >= 2
            assert remove_abandoned_rules() == len(stale)
            with pytest.raises(PortTaken, match="8081"):
                RuleBook(agent_tag()).redirect(8081, 40003)
            left = [rule[rule.index("--dport") + 1] for rule in _our_rules()]
            live_book.release_all()
            return left

        assert sorted(in_netns(scratch_netns, work)) == ["8081", "8081"]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_guardian_removes_its_agents_rules_when_the_pipe_closes(scratch_netns: str) -> None:
    from agent.incoming.guardian import Guardian

    def work() -> tuple[int, int]:
        tag = f"{COMMENT_PREFIX}{os.getpid()}/guardian-test"
        guardian = Guardian(tag)
        guardian.start()
        RuleBook(tag).redirect(8083, 40004)
        before = len(_our_rules())
        guardian.stop()  # closes the pipe, as the agent's death would
        return before, len(_our_rules())

    assert in_netns(scratch_netns, work) == (2, 0)


# ---- policy (mirrord semantics) ----------------------------------------------------------


def _decide(port: int, host: str = "0.0.0.0", **settings: object) -> PortDecision | None:
    return IncomingPolicy(IncomingConfig(**settings)).decide(  # type: ignore[arg-type]
        InetAddress(
            ipaddress.ip_address(host), port, socket.AF_INET6 if ":" in host else socket.AF_INET
        )
    )


def test_policy_defaults_mirror_every_port_but_zero() -> None:
    assert _decide(8080) == PortDecision(8080, 0, "mirror")
    assert _decide(0) is None
    assert _decide(8080, mode=IncomingMode.OFF) is None


def test_policy_port_selection_mapping_and_local_ports() -> None:
    assert _decide(9999, ignore_ports=frozenset({9999})) is None
    assert _decide(8080, ports=frozenset({80})) is None
    assert _decide(80, ports=frozenset({80})) == PortDecision(80, 0, "mirror")
    mapped = _decide(9333, port_mapping=((9333, 80),), listen_ports=((9333, 4480),))
    assert mapped == PortDecision(80, 4480, "mirror")
    assert _decide(8080, "127.0.0.1", ignore_localhost=True) is None
    assert _decide(8080, "::ffff:127.0.0.1", ignore_localhost=True) is None
    assert _decide(8080, "127.0.0.1") is not None


def test_policy_http_filter_applies_on_its_ports_and_other_stolen_ports_are_stolen_whole() -> None:
    """mirrord 3.250's http_filter.ports: the filter's ports; the others are stolen whole."""
    wire = {"header": "^x-user: me$"}
    http = HttpFilterConfig(wire=wire, ports=(8080,))
    steal = {"mode": IncomingMode.STEAL, "http_filter": http}
    assert _decide(8080, **steal) == PortDecision(8080, 0, "steal", wire)
    assert _decide(9000, **steal) == PortDecision(9000, 0, "steal")  # stolen, unfiltered
    assert _decide(9000, ports=frozenset({8080}), **steal) is None  # not in incoming.ports
    assert _decide(9000, mode=IncomingMode.STEAL) == PortDecision(9000, 0, "steal")


def test_policy_http_filter_without_ports_applies_on_every_stolen_port() -> None:
    wire = {"any_of": [{"method": "POST"}, {"path": "^/api"}]}
    steal = {"mode": IncomingMode.STEAL, "http_filter": HttpFilterConfig(wire=wire)}
    assert _decide(3000, **steal) == PortDecision(3000, 0, "steal", wire)
    assert _decide(8080, **steal) == PortDecision(8080, 0, "steal", wire)
