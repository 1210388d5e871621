"""Outgoing filters' host names are resolved on the side the filter names, as in mirrord: a
`remote` filter's names the way the target resolves them (its /etc/hosts and DNS, through the
agent), a `local` filter's the way this machine does; a connection to such an address matches
even if the program never resolved the name."""

from __future__ import annotations

import ipaddress

from mirrord_trace.config.filters import Protocol, parse_address_filter
from mirrord_trace.config.model import DnsConfig, FilterSide, OutgoingConfig, TrafficFilter
from mirrord_trace.local_target import LocalAgent
from mirrord_trace.net.filter_names import FilterNames, local_lookup, remote_lookup
from mirrord_trace.net.policy import OutgoingPolicy, Route
from mirrord_trace.net.sockaddr import InetAddress
from tests.test_agent_support import running_target


def outgoing(side: FilterSide, *entries: str) -> OutgoingConfig:
    parsed = tuple(parse_address_filter(entry) for entry in entries)
    return OutgoingConfig(filter=TrafficFilter(side=side, entries=parsed))


def to(address: str, port: int) -> InetAddress:
    return InetAddress(ipaddress.ip_address(address), port)


def test_a_name_matches_its_addresses_on_the_filters_side() -> None:
    addresses = {"db.internal": frozenset({ipaddress.ip_address("10.1.2.3")})}
    policy = OutgoingPolicy(
        outgoing(FilterSide.LOCAL, "db.internal:5432"),
        DnsConfig(),
        filter_addresses=lambda name: addresses.get(name, frozenset()),
    )
    decision = policy.decide(Protocol.TCP, to("10.1.2.3", 5432))
    assert decision.route is Route.LOCAL and "db.internal" in decision.why
    assert policy.decide(Protocol.TCP, to("10.1.2.3", 80)).route is Route.REMOTE  # port differs
    assert policy.decide(Protocol.TCP, to("10.1.2.4", 5432)).route is Route.REMOTE


def test_answers_are_kept_for_a_while_and_failures_for_less() -> None:
    now = [0.0]
    asked: list[str] = []

    def lookup(name: str) -> frozenset[ipaddress.IPv4Address]:
        asked.append(name)
        return frozenset({ipaddress.IPv4Address("10.0.0.1")}) if name == "a" else frozenset()

    names = FilterNames(lookup, clock=lambda: now[0])
    for _ in range(3):
        names.addresses("a")
        names.addresses("b")
    assert asked == ["a", "b"]
    now[0] = 6.0  # past a failure's time, within an answer's
    names.addresses("a")
    names.addresses("b")
    assert asked == ["a", "b", "b"]
    now[0] = 31.0
    names.addresses("a")
    assert asked == ["a", "b", "b", "a"]


def test_local_lookup_is_this_machines() -> None:
    assert ipaddress.ip_address("127.0.0.1") in local_lookup("localhost")
    assert local_lookup("hosts-only.test") == frozenset()  # only the target's hosts file has it


def test_a_remote_filters_names_are_resolved_by_the_target() -> None:
    with running_target() as target, LocalAgent(target.pid) as client:
        lookup = remote_lookup(client)
        assert lookup("hosts-only.test") == {ipaddress.ip_address("10.1.2.3")}
        # Through the target's nameserver (its dnsmasq answers *.svc.cluster.test).
        assert lookup("db.svc.cluster.test") == {ipaddress.ip_address("10.96.0.10")}
        policy = OutgoingPolicy(
            outgoing(FilterSide.REMOTE, "hosts-only.test:5432"),
            DnsConfig(),
            filter_addresses=FilterNames(lookup).addresses,
        )
        assert policy.decide(Protocol.TCP, to("10.1.2.3", 5432)).route is Route.REMOTE
        assert policy.decide(Protocol.TCP, to("10.1.2.4", 5432)).route is Route.LOCAL
