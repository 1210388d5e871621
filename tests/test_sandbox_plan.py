"""What a sandbox name and index decide: names the kernel accepts, addresses that never clash."""

from __future__ import annotations

import ipaddress
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mirrord_trace.sandbox.plan import (
    LINK_BLOCK,
    MAX_INDEX,
    SERVICE_BLOCK,
    InvalidSandboxName,
    SandboxPlan,
    preferred_index,
    validate_name,
)

IFNAMSIZ_CHARS = 15  # the kernel's interface-name limit, without the terminating NUL

valid_names = st.from_regex(re.compile(r"[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?"), fullmatch=True)
indexes = st.integers(min_value=1, max_value=MAX_INDEX)


@given(valid_names, indexes)
def test_every_valid_name_gives_usable_interface_names_and_paths(name: str, index: int) -> None:
    plan = SandboxPlan(validate_name(name), index)
    for interface in (plan.host_veth, plan.peer_veth):
        assert len(interface) <= IFNAMSIZ_CHARS
        assert re.fullmatch(r"[a-z0-9]+", interface)
    assert plan.host_veth != plan.peer_veth
    assert plan.root.parent.name == name and plan.netns.endswith(name)
    assert 1 <= preferred_index(name) <= MAX_INDEX


@given(indexes)
def test_addresses_of_one_sandbox_fit_together(index: int) -> None:
    plan = SandboxPlan("x", index)
    link = plan.link_network
    assert link.subnet_of(LINK_BLOCK) and link.prefixlen == 30
    assert {ipaddress.ip_address(plan.host_addr), ipaddress.ip_address(plan.target_addr)} == set(
        link.hosts()
    )
    assert plan.service_network.subnet_of(SERVICE_BLOCK)
    for address in (plan.dns_addr, plan.service_addr):
        assert ipaddress.ip_address(address) in plan.service_network
    assert plan.dns_addr != plan.service_addr


@given(indexes, indexes)
def test_sandboxes_with_different_indexes_never_share_addresses(first: int, second: int) -> None:
    one, other = SandboxPlan("a", first), SandboxPlan("b", second)
    overlap = one.link_network.overlaps(other.link_network) or one.service_network.overlaps(
        other.service_network
    )
    assert overlap == (first == second)


@given(st.text(max_size=40).filter(lambda text: not re.fullmatch(
    r"[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?", text)))  # fmt: skip
def test_other_names_are_refused_with_the_rule(name: str) -> None:
    with pytest.raises(InvalidSandboxName, match="lowercase letters, digits or '-'"):
        validate_name(name)
