"""The pod's network: a namespace joined to the host by a veth pair (all through pyroute2).

Host side: `<host_veth>` with host_addr/30, and an "unreachable" route for the service block so
that connecting to a cluster-only address from the host fails at once with EHOSTUNREACH.
Pod side: `eth0` with target_addr/30 and a default route via the host; the DNS and service
addresses live on the pod's loopback (this kernel has no dummy links).
"""

from __future__ import annotations

import ipaddress
import socket
from typing import TYPE_CHECKING

from mirrord_trace.sandbox.plan import POD_VETH, SandboxPlan

if TYPE_CHECKING:
    from pyroute2 import IPRoute

# pyroute2 is imported inside the functions: importing it costs ~0.4 s, which every
# `mirrord-trace` start would pay just because the CLI registers the sandbox commands.

_RTN_UNREACHABLE = 7


def host_networks_in_use() -> list[ipaddress.IPv4Network]:
    """Networks the host already routes or has addresses in (the default route excluded)."""
    from pyroute2 import IPRoute

    used: list[ipaddress.IPv4Network] = []
    with IPRoute() as ipr:
        for route in ipr.get_routes(family=socket.AF_INET):
            destination = route.get("dst")
            if destination and route["dst_len"] > 0:
                used.append(ipaddress.IPv4Network((destination, route["dst_len"]), strict=False))
        for address in ipr.get_addr(family=socket.AF_INET):
            used.append(
                ipaddress.IPv4Network((address.get("address"), address["prefixlen"]), strict=False)
            )
    return used


def plan_collides(plan: SandboxPlan, used: list[ipaddress.IPv4Network]) -> bool:
    return any(
        network.overlaps(plan.link_network) or network.overlaps(plan.service_network)
        for network in used
        if network.prefixlen >= 16  # wide local routes (e.g. 10.0.0.0/8 on lo) are not users
    )


def build_network(plan: SandboxPlan) -> None:
    from pyroute2 import IPRoute, NetNS, netns

    netns.create(plan.netns)
    with IPRoute() as ipr:
        ipr.link(
            "add",
            ifname=plan.host_veth,
            kind="veth",
            peer={"ifname": plan.peer_veth, "net_ns_fd": plan.netns},
        )
        (host_index,) = ipr.link_lookup(ifname=plan.host_veth)
        ipr.addr("add", index=host_index, address=plan.host_addr, prefixlen=30)
        ipr.link("set", index=host_index, state="up")
        ipr.route("add", dst=str(plan.service_network), type="unreachable")
    with NetNS(plan.netns) as pod:
        (loopback,) = pod.link_lookup(ifname="lo")
        pod.link("set", index=loopback, state="up")
        for address in (plan.dns_addr, plan.service_addr):
            pod.addr("add", index=loopback, address=address, prefixlen=32)
        (pod_index,) = pod.link_lookup(ifname=plan.peer_veth)
        pod.link("set", index=pod_index, ifname=POD_VETH)
        pod.addr("add", index=pod_index, address=plan.target_addr, prefixlen=30)
        pod.link("set", index=pod_index, state="up")
        pod.route("add", dst="0.0.0.0/0", gateway=plan.host_addr)


def netns_exists(plan: SandboxPlan) -> bool:
    return plan.netns_path.exists()


def host_veth_exists(plan: SandboxPlan) -> bool:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        return bool(ipr.link_lookup(ifname=plan.host_veth))


def _unreachable_route_exists(ipr: IPRoute, plan: SandboxPlan) -> bool:
    network = plan.service_network
    return any(
        route.get("dst") == str(network.network_address)
        and route["dst_len"] == network.prefixlen
        and route["type"] == _RTN_UNREACHABLE
        for route in ipr.get_routes(family=socket.AF_INET)
    )


def teardown_network(plan: SandboxPlan, with_routes: bool) -> None:
    """Remove what build_network made; parts already gone are skipped.

    with_routes is False when the plan's index is unknown (no state), so the route is not ours
    to judge.
    """
    from pyroute2 import IPRoute, netns

    with IPRoute() as ipr:
        # Deleting one end of a veth pair deletes both, even while the namespace lives on.
        for index in ipr.link_lookup(ifname=plan.host_veth):
            ipr.link("del", index=index)
        if with_routes and _unreachable_route_exists(ipr, plan):
            ipr.route("del", dst=str(plan.service_network), type="unreachable")
    if netns_exists(plan):
        netns.remove(plan.netns)
