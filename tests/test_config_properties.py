"""Properties of the two small grammars in the configuration: filter entries and targets.
Whatever the input, parsing either succeeds or raises its own error (one line, never a crash);
what is printed parses back to the same value."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from mirrord_trace.config.filters import (
    AddressFilter,
    FilterSyntaxError,
    Protocol,
    parse_address_filter,
)
from mirrord_trace.targets import (
    DeploymentTarget,
    PidTarget,
    PodTarget,
    Targetless,
    TargetParseError,
    parse_target,
)

label = st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True)
hostnames = st.lists(label, min_size=1, max_size=4).map(".".join)
ipv4 = st.ip_addresses(v=4).filter(lambda a: not a.is_unspecified)
ipv6 = st.ip_addresses(v=6).filter(lambda a: not a.is_unspecified)
networks = st.one_of(
    st.tuples(st.ip_addresses(v=4), st.integers(0, 32)),
    st.tuples(st.ip_addresses(v=6), st.integers(0, 128)),
).map(lambda pair: ipaddress.ip_network(f"{pair[0]}/{pair[1]}", strict=False))
filters = st.builds(
    AddressFilter,
    protocol=st.sampled_from(Protocol),
    host=st.none() | hostnames | ipv4 | ipv6 | networks,
    port=st.none() | st.integers(1, 65535),
)


@given(filters)
def test_a_printed_filter_parses_back_to_itself(entry: AddressFilter) -> None:
    assert parse_address_filter(str(entry)) == entry


@given(st.text(alphabet="tcpud:/[]0123456789.abf-_ x", max_size=24))
def test_any_text_parses_or_gives_a_one_line_filter_error(text: str) -> None:
    try:
        entry = parse_address_filter(text)
    except FilterSyntaxError as error:
        assert "\n" not in str(error) and str(error)
    else:
        assert parse_address_filter(str(entry)) == entry


@given(filters, st.ip_addresses(), st.integers(1, 65535), st.sampled_from(Protocol))
def test_an_entry_with_an_address_matches_exactly_that_address(
    entry: AddressFilter, address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int,
    protocol: Protocol,
) -> None:  # fmt: skip
    expected = (
        (entry.protocol is Protocol.ANY or entry.protocol is protocol)
        and (entry.port is None or entry.port == port)
        and (
            entry.host is None
            or (isinstance(entry.host, ipaddress.IPv4Address | ipaddress.IPv6Address)
                and entry.host == address)
            or (isinstance(entry.host, ipaddress.IPv4Network | ipaddress.IPv6Network)
                and entry.host.version == address.version and address in entry.host)
        )
    )  # fmt: skip
    assert entry.matches(protocol, address, port) == expected


k8s_names = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)
targets = st.one_of(
    st.just(Targetless()),
    st.builds(PidTarget, st.integers(1, 2**22)),
    st.builds(PodTarget, k8s_names, st.none() | k8s_names),
    st.builds(DeploymentTarget, k8s_names, st.none() | k8s_names),
)


@given(targets)
def test_a_printed_target_parses_back_to_itself(
    target: Targetless | PidTarget | PodTarget | DeploymentTarget,
) -> None:
    assert parse_target(str(target)) == target


@given(st.text(alphabet="podeymntcaierls/0123456789-.A_ ", max_size=30))
def test_any_text_is_a_target_or_a_one_line_target_error(text: str) -> None:
    try:
        target = parse_target(text)
    except TargetParseError as error:
        assert "\n" not in str(error)
    else:
        assert parse_target(str(target)) == target
