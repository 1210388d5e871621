"""The pure parts of outgoing traffic: sockaddr encoding, where a destination goes (config,
filters, resolved names), which DNS queries the pod answers, resolv.conf parsing."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.dns import DNS, DNSQR, DNSRR

from mirrord_trace.config.filters import Protocol, parse_address_filter
from mirrord_trace.config.model import DnsConfig, FilterSide, OutgoingConfig, TrafficFilter
from mirrord_trace.handlers.dns import (
    DnsQueryRouter,
    answered_addresses,
    query_name,
    reverse_pointer_address,
)
from mirrord_trace.net.dns_relay import parse_nameservers
from mirrord_trace.net.names import ResolvedNames
from mirrord_trace.net.policy import OutgoingPolicy, Route
from mirrord_trace.net.sockaddr import InetAddress, pack_sockaddr, parse_sockaddr

ipv4 = st.builds(ipaddress.IPv4Address, st.integers(0, 2**32 - 1))
ipv6 = st.builds(ipaddress.IPv6Address, st.integers(0, 2**128 - 1))
ports = st.integers(0, 65535)


def _filter(side: FilterSide, *entries: str) -> TrafficFilter:
    return TrafficFilter(side, tuple(parse_address_filter(entry) for entry in entries))


def _dns_filter(side: FilterSide, *entries: str) -> TrafficFilter:
    return TrafficFilter(side, tuple(parse_address_filter(e, with_protocol=False)
                                     for e in entries))


def _destination(text: str, port: int) -> InetAddress:
    return InetAddress(ipaddress.ip_address(text), port)


# -- sockaddr --
@given(ipv4, ports)
def test_ipv4_sockaddr_round_trip(ip, port) -> None:
    packed = pack_sockaddr(ip, port, socket.AF_INET)
    assert len(packed) == 16
    assert parse_sockaddr(packed) == InetAddress(ip, port, socket.AF_INET)
    # The kernel's own encoding, for comparison.
    assert packed[:8] == socket.AF_INET.to_bytes(2, "little") + port.to_bytes(2, "big") + \
        ip.packed


@given(ipv6, ports)
def test_ipv6_sockaddr_round_trip(ip, port) -> None:
    parsed = parse_sockaddr(pack_sockaddr(ip, port, socket.AF_INET6))
    assert parsed is not None and parsed.port == port and parsed.family == socket.AF_INET6
    assert parsed.ip == (ip.ipv4_mapped or ip)


@given(ipv4, ports)
def test_ipv4_in_an_ipv6_socket_is_v4_mapped_and_means_the_ipv4_address(ip, port) -> None:
    packed = pack_sockaddr(ip, port, socket.AF_INET6)
    assert ipaddress.IPv6Address(packed[8:24]).ipv4_mapped == ip
    parsed = parse_sockaddr(packed)
    assert parsed == InetAddress(ip, port, socket.AF_INET6)
    assert parsed.network_family == socket.AF_INET


@given(st.binary(max_size=40))
def test_parse_never_fails_on_garbage(raw: bytes) -> None:
    parsed = parse_sockaddr(raw)
    assert parsed is None or 0 <= parsed.port <= 65535


def test_unix_and_short_sockaddrs_are_not_inet() -> None:
    assert parse_sockaddr(socket.AF_UNIX.to_bytes(2, "little") + b"/tmp/x\0") is None
    assert parse_sockaddr(pack_sockaddr(ipaddress.IPv4Address("1.2.3.4"), 80,
                                        socket.AF_INET)[:10]) is None


# -- policy --
def test_default_sends_tcp_and_udp_through_the_target_and_port_53_to_dns() -> None:
    policy = OutgoingPolicy(OutgoingConfig(), DnsConfig())
    assert policy.decide(Protocol.TCP, _destination("10.0.0.5", 5432)).route is Route.REMOTE
    assert policy.decide(Protocol.UDP, _destination("10.0.0.5", 9000)).route is Route.REMOTE
    assert policy.decide(Protocol.UDP, _destination("10.96.0.10", 53)).route is Route.DNS
    assert policy.decide(Protocol.TCP, _destination("10.96.0.10", 53)).route is Route.DNS


@given(st.sampled_from(["127.0.0.1", "127.3.4.5", "::1", "0.0.0.0", "::"]), ports,
       st.sampled_from(list(Protocol)[1:]))
def test_loopback_stays_local_by_default(host, port, protocol) -> None:
    policy = OutgoingPolicy(OutgoingConfig(), DnsConfig())
    assert policy.decide(protocol, _destination(host, port)).route is Route.LOCAL


def test_loopback_goes_remote_only_when_the_remote_filter_names_it() -> None:
    named = OutgoingConfig(filter=_filter(FilterSide.REMOTE, "127.0.0.1:6379", "localhost:80"))
    policy = OutgoingPolicy(named, DnsConfig())
    assert policy.decide(Protocol.TCP, _destination("127.0.0.1", 6379)).route is Route.REMOTE
    assert policy.decide(Protocol.TCP, _destination("127.0.0.1", 80)).route is Route.REMOTE
    assert policy.decide(Protocol.TCP, _destination("127.0.0.1", 81)).route is Route.LOCAL
    # A filter that matches every address does not name loopback.
    everything = OutgoingPolicy(OutgoingConfig(filter=_filter(FilterSide.REMOTE, ":6379")),
                                DnsConfig())
    assert everything.decide(Protocol.TCP, _destination("127.0.0.1", 6379)).route is Route.LOCAL
    ignored = OutgoingConfig(ignore_localhost=True, filter=named.filter)
    assert OutgoingPolicy(ignored, DnsConfig()).decide(
        Protocol.TCP, _destination("127.0.0.1", 6379)).route is Route.LOCAL


@given(ipv4.filter(lambda ip: not ip.is_loopback and not ip.is_unspecified),
       ports.filter(lambda port: port != 53))
def test_protocol_switches_keep_that_protocol_local(ip, port) -> None:
    destination = InetAddress(ip, port)
    no_tcp = OutgoingPolicy(OutgoingConfig(tcp=False), DnsConfig())
    assert no_tcp.decide(Protocol.TCP, destination).route is Route.LOCAL
    assert no_tcp.decide(Protocol.UDP, destination).route is Route.REMOTE
    no_udp = OutgoingPolicy(OutgoingConfig(udp=False), DnsConfig())
    assert no_udp.decide(Protocol.UDP, destination).route is Route.LOCAL
    assert no_udp.decide(Protocol.TCP, destination).route is Route.REMOTE


@given(ipv4.filter(lambda ip: not ip.is_loopback and not ip.is_unspecified), ports,
       st.sampled_from([Protocol.TCP, Protocol.UDP]))
def test_remote_and_local_filters_are_complements(ip, port, protocol) -> None:
    entries = ("tcp://10.0.0.0/8:5432", "udp://192.168.0.0/16", ":8443")
    remote = OutgoingPolicy(OutgoingConfig(filter=_filter(FilterSide.REMOTE, *entries)),
                            DnsConfig(enabled=False))
    local = OutgoingPolicy(OutgoingConfig(filter=_filter(FilterSide.LOCAL, *entries)),
                           DnsConfig(enabled=False))
    destination = InetAddress(ip, port)
    matched = any(e.matches(protocol, ip, port) for e in remote._entries)
    assert (remote.decide(protocol, destination).route is Route.REMOTE) == matched
    assert (local.decide(protocol, destination).route is Route.LOCAL) == matched


def test_host_name_entries_match_the_names_the_program_resolved() -> None:
    names = ResolvedNames()
    policy = OutgoingPolicy(OutgoingConfig(filter=_filter(FilterSide.LOCAL, "db.internal")),
                            DnsConfig(), names)
    destination = _destination("10.1.2.3", 5432)
    assert policy.decide(Protocol.TCP, destination).route is Route.REMOTE
    names.record("DB.Internal.", [destination.ip])
    decision = policy.decide(Protocol.TCP, destination)
    assert decision.route is Route.LOCAL and "db.internal" in decision.why


def test_without_remote_dns_only_the_targets_nameservers_go_to_the_relay() -> None:
    target = frozenset({ipaddress.ip_address("10.96.0.10")})
    policy = OutgoingPolicy(OutgoingConfig(), DnsConfig(enabled=False),
                            target_nameservers=lambda: target)
    assert policy.decide(Protocol.UDP, _destination("10.96.0.10", 53)).route is Route.DNS
    assert policy.decide(Protocol.UDP, _destination("8.8.8.8", 53)).route is Route.REMOTE


def test_queries_to_a_loopback_nameserver_stay_local() -> None:
    policy = OutgoingPolicy(OutgoingConfig(), DnsConfig())
    assert policy.decide(Protocol.UDP, _destination("127.0.0.53", 53)).route is Route.LOCAL


# -- DNS decisions --
def _query(name: str, qtype: str = "A") -> bytes:
    return bytes(DNS(id=1, rd=1, qd=DNSQR(qname=name, qtype=qtype)))


@given(st.lists(st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True),
                min_size=1, max_size=5))
def test_query_name_reads_back_the_name_asked(labels) -> None:
    name = ".".join(labels)
    assert query_name(_query(name)) == name


def test_query_name_of_garbage_is_none() -> None:
    assert query_name(b"\x00\x01garbage") is None


def test_dns_filter_decides_per_query() -> None:
    local = DnsQueryRouter(DnsConfig(filter=_dns_filter(FilterSide.LOCAL, "app.example")))
    assert local.decide(_query("app.example"), 53)[0] is False
    assert local.decide(_query("APP.example."), 53)[0] is False
    assert local.decide(_query("other.example"), 53)[0] is True
    remote = DnsQueryRouter(DnsConfig(filter=_dns_filter(FilterSide.REMOTE, "app.example")))
    assert remote.decide(_query("app.example"), 53)[0] is True
    assert remote.decide(_query("other.example"), 53)[0] is False
    assert DnsQueryRouter(DnsConfig(enabled=False)).decide(_query("x"), 53)[0] is False
    assert DnsQueryRouter(DnsConfig()).decide(b"not even dns", 53)[0] is True


def test_address_entries_match_reverse_lookups() -> None:
    router = DnsQueryRouter(DnsConfig(filter=_dns_filter(FilterSide.LOCAL, "10.0.0.0/8")))
    assert router.decide(_query("5.4.3.10.in-addr.arpa", "PTR"), 53)[0] is False
    assert router.decide(_query("5.4.3.11.in-addr.arpa", "PTR"), 53)[0] is True


@given(st.one_of(ipv4, ipv6))
def test_reverse_pointer_names_map_back_to_their_address(ip) -> None:
    assert reverse_pointer_address(ip.reverse_pointer) == ip


def test_answered_addresses_follow_cnames_to_the_name_asked() -> None:
    reply = DNS(id=1, qr=1, qd=DNSQR(qname="www.example"), an=[
        DNSRR(rrname="www.example", type="CNAME", rdata="edge.example"),
        DNSRR(rrname="edge.example", type="A", rdata="192.0.2.7")])
    found = answered_addresses(bytes(reply))
    assert ("www.example", ipaddress.ip_address("192.0.2.7")) in found
    assert ("edge.example", ipaddress.ip_address("192.0.2.7")) in found


@pytest.mark.parametrize(("text", "expected"), [
    ("nameserver 10.96.0.10\nsearch a b\noptions ndots:5\n", ["10.96.0.10"]),
    ("# comment\nnameserver 1.1.1.1 # trailing\nnameserver fe80::1%eth0\n",
     ["1.1.1.1", "fe80::1"]),
    ("nameserver not-an-address\n", []),
])
def test_resolv_conf_nameservers(text: str, expected: list[str]) -> None:
    assert [str(ip) for ip in parse_nameservers(text)] == expected


def test_hosts_file_names_are_learned() -> None:
    names = ResolvedNames()
    names.record_hosts_file("127.0.0.1 localhost\n10.0.0.9\tlegacy-api.internal legacy\n")
    assert names.names_for(ipaddress.ip_address("10.0.0.9")) == ("legacy-api.internal",
                                                                  "legacy")


def test_resolved_names_forget_the_oldest_beyond_capacity() -> None:
    names = ResolvedNames(capacity=2)
    for last in range(3):
        names.record(f"n{last}", [ipaddress.ip_address(f"10.0.0.{last}")])
    assert names.names_for(ipaddress.ip_address("10.0.0.0")) == ()
    assert names.names_for(ipaddress.ip_address("10.0.0.2")) == ("n2",)


def test_sweep_forgets_udp_sockets_the_program_has_closed() -> None:
    """A Go program makes a new UDP socket per DNS query: what the handlers remember about
    each must go once the program closes it, or a long-running program would grow forever."""
    import subprocess
    import sys

    from mirrord_trace.config import Config
    from mirrord_trace.net.flows import Flow
    from mirrord_trace.net.session import NetSession

    holder = subprocess.Popen(
        [sys.executable, "-c", "import os, socket, sys\n"
         "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
         "print(os.fstat(s.fileno()).st_ino, flush=True)\n"
         "sys.stdin.readline(); s.close(); print('closed', flush=True); sys.stdin.readline()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    net = NetSession(Config(), client=None)  # type: ignore[arg-type] - sweeps need no agent
    try:
        assert holder.stdout is not None and holder.stdin is not None
        inode = int(holder.stdout.readline())
        destination = InetAddress(ipaddress.ip_address("10.96.0.10"), 53)
        net.flows.connected[inode] = Flow(Protocol.UDP, destination, None, None, holder.pid)
        net.flows.relayed_udp[inode] = holder.pid
        net._sweep()
        assert inode in net.flows.connected and inode in net.flows.relayed_udp
        holder.stdin.write("close\n")
        holder.stdin.flush()
        assert holder.stdout.readline() == "closed\n"
        net._sweep()
        assert inode not in net.flows.connected and inode not in net.flows.relayed_udp
    finally:
        holder.kill()
        holder.wait()
        net.end()
