"""dns.getaddrinfo: resolve a name the way a program in the target would.

The configuration is the target's own: /etc/hosts and /etc/resolv.conf read inside its root
(nameservers, search list, ndots), and the queries leave from its network namespace. DNS
messages are built and parsed with scapy.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import secrets
import socket
from dataclasses import dataclass, field
from typing import Any

from scapy.layers.dns import DNS, DNSQR

from agent.net.requests import dns_query
from agent.target.root import TargetRoot

_QTYPES = {socket.AF_INET: ("A", 1), socket.AF_INET6: ("AAAA", 28)}
_NXDOMAIN = 3


@dataclass
class ResolverConfig:
    nameservers: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    search: list[str] = field(default_factory=list)
    ndots: int = 1


def _read_target_file(root: TargetRoot, path: str) -> str:
    try:
        with root.opened(path, os.O_RDONLY) as fd, os.fdopen(os.dup(fd), "rb") as file:
            return file.read(1 << 20).decode(errors="replace")
    except OSError:
        return ""


def parse_resolv_conf(text: str) -> ResolverConfig:
    config = ResolverConfig(nameservers=[])
    for line in text.splitlines():
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if not words:
            continue
        if words[0] == "nameserver" and len(words) > 1:
            config.nameservers.append(words[1])
        elif words[0] in ("search", "domain"):
            config.search = words[1:]
        elif words[0] == "options":
            for option in words[1:]:
                if option.startswith("ndots:") and option[6:].isdigit():
                    config.ndots = min(int(option[6:]), 15)
    config.nameservers = config.nameservers[:3] or ["127.0.0.1"]
    return config


def hosts_lookup(text: str, host: str, family: int) -> list[dict[str, Any]]:
    found = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) < 2 or host.lower() not in (name.lower() for name in words[1:]):
            continue
        try:
            address = ipaddress.ip_address(words[0])
        except ValueError:
            continue
        address_family = socket.AF_INET if address.version == 4 else socket.AF_INET6
        if family in (0, address_family):
            found.append({"family": address_family, "address": str(address)})
    return found


def candidate_names(host: str, config: ResolverConfig) -> list[str]:
    """Fully qualified names to try, in resolv.conf(5) order."""
    if host.endswith("."):
        return [host]
    searched = [f"{host}.{domain}." for domain in config.search]
    if host.count(".") >= config.ndots:
        return [f"{host}.", *searched]
    return [*searched, f"{host}."]


async def _ask(
    name: str, family: int, config: ResolverConfig, timeout: float
) -> list[dict[str, Any]]:
    """Addresses of one family for `name` (none when it does not exist); OSError when no
    nameserver gave an answer."""
    qtype, wanted = _QTYPES[family]
    query = bytes(DNS(id=secrets.randbelow(1 << 16), rd=1, qd=DNSQR(qname=name, qtype=qtype)))
    last_error: OSError | None = None
    for nameserver in config.nameservers:
        for transport in ("udp", "tcp"):
            fields = {"payload": query, "nameserver": nameserver, "port": 53,
                      "transport": transport, "timeout": timeout}  # fmt: skip
            try:
                reply = DNS((await dns_query(fields))["payload"])
            except OSError as error:
                last_error = error
                break
            if reply.tc and transport == "udp":
                continue  # truncated: ask again over TCP
            if reply.rcode == _NXDOMAIN:
                return []
            if reply.rcode != 0:
                last_error = OSError(errno.EAGAIN, f"{nameserver} answered rcode {reply.rcode}")
                break
            answers = [record for record in (reply.an or []) if record.type == wanted]
            return [{"family": family, "address": str(r.rdata)} for r in answers]
    if last_error is not None:
        raise last_error
    return []


async def getaddrinfo(root: TargetRoot, fields: dict[str, Any]) -> dict[str, Any]:
    host: str = fields["host"]
    family: int = fields["family"]
    if family not in (0, *_QTYPES):
        raise OSError(errno.EAFNOSUPPORT, f"address family {family} is not inet/inet6")
    try:
        address = ipaddress.ip_address(host)
        address_family = socket.AF_INET if address.version == 4 else socket.AF_INET6
        if family in (0, address_family):
            return {"addresses": [{"family": address_family, "address": str(address)}]}
    except ValueError:
        pass
    found = hosts_lookup(_read_target_file(root, "/etc/hosts"), host, family)
    if found:
        return {"addresses": found}
    config = parse_resolv_conf(_read_target_file(root, "/etc/resolv.conf"))
    families = [family] if family else [socket.AF_INET, socket.AF_INET6]
    timeout = float(fields["timeout"])
    failure: OSError | None = None
    for name in candidate_names(host, config):
        addresses: list[dict[str, Any]] = []
        for each in families:
            try:
                addresses.extend(await _ask(name, each, config, timeout))
            except OSError as error:
                failure = error
        if addresses:
            return {"addresses": addresses}
    if failure is not None:
        # No nameserver could say whether the name exists: a temporary failure (EAI_AGAIN).
        raise OSError(failure.errno or errno.EAGAIN, f"{host}: {failure.strerror or failure}")
    raise OSError(errno.ENOENT, f"{host}: name not found")
