"""The iptables REDIRECT rules that steal a port, tagged so they can always be found again.

Every rule carries the comment `mirrord-trace agent=<pid>/<start time>`: the agent that owns it,
named so that a recycled pid is not mistaken for it. That tag is what lets the guardian remove
an agent's rules after the agent was killed, and a later agent remove rules whose owner is gone
(both the agent and its guardian killed, a node crash...).

Two rules per port and IP version, in the nat table of the target's network namespace:
  PREROUTING  traffic that arrives from outside the namespace;
  OUTPUT      connections made inside it to one of its own addresses (the target calling itself,
              a sidecar), except the agent's own, which carry AGENT_MARK (so that requests the
              HTTP filter passes on to the target are not stolen again).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

COMMENT_PREFIX = "mirrord-trace agent="
# SO_MARK of the agent's own connections to the target; the OUTPUT rules skip them.
AGENT_MARK = 0x6D740000
AGENT_MARK_MASK = 0xFFFF0000
_LOCK_WAIT_SECONDS = "10"
_TAG = re.compile(r"mirrord-trace agent=(\d+)/(\d+)")
_CHAINS = ("PREROUTING", "OUTPUT")


class RuleError(Exception):
    """iptables refused a rule; the message has its complaint."""


class PortTaken(RuleError):
    """Another live agent steals the port already (its rule would win: the first one does)."""


def process_start_time(pid: int) -> int | None:
    """Clock ticks after boot at which `pid` started (with the pid, names a process for good)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
    except OSError:
        return None
    return int(text[text.rindex(")") + 2 :].split()[19])


def agent_tag(pid: int | None = None) -> str:
    """The comment that marks the rules of agent `pid` (this process by default)."""
    pid = os.getpid() if pid is None else pid
    return f"{COMMENT_PREFIX}{pid}/{process_start_time(pid)}"


def owner_is_alive(comment: str) -> bool:
    match = _TAG.search(comment)
    if match is None:
        return True  # not ours to judge
    pid, started = int(match.group(1)), int(match.group(2))
    return process_start_time(pid) == started


@dataclass(frozen=True)
class IptablesFamily:
    command: str  # iptables or ip6tables
    version: int

    @property
    def save_command(self) -> str:
        return f"{self.command}-save"

    def available(self) -> bool:
        return all(shutil.which(name) for name in (self.command, self.save_command))


IPV4 = IptablesFamily("iptables", 4)
IPV6 = IptablesFamily("ip6tables", 6)


def _run(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise RuleError(f"{argv[0]} could not run: {error}") from None
    if done.returncode != 0:
        message = " ".join(done.stderr.split()) or f"exit status {done.returncode}"
        raise RuleError(f"{' '.join(argv[:4])}...: {message}")
    return done.stdout


def redirect_rules(port: int, to_port: int, tag: str) -> list[list[str]]:
    """The rule specifications (after `-A`) that send new connections to `port` to `to_port`."""
    comment = ["-m", "comment", "--comment", tag]
    redirect = ["-j", "REDIRECT", "--to-ports", str(to_port)]
    match_port = ["-p", "tcp", "-m", "tcp", "--dport", str(port)]
    own_addresses = ["-m", "addrtype", "--dst-type", "LOCAL"]
    not_agent = ["-m", "mark", "!", "--mark", f"{AGENT_MARK:#x}/{AGENT_MARK_MASK:#x}"]
    return [
        ["PREROUTING", *match_port, *comment, *redirect],
        ["OUTPUT", *match_port, *own_addresses, *not_agent, *comment, *redirect],
    ]


def saved_rules(family: IptablesFamily) -> list[list[str]]:
    """Our nat rules as iptables-save prints them, split: `-A CHAIN ...` -> [CHAIN, ...]."""
    rules = []
    for line in _run([family.save_command, "-t", "nat"]).splitlines():
        if line.startswith("-A ") and COMMENT_PREFIX in line:
            rules.append(shlex.split(line)[1:])
    return rules


def _comment_of(rule: list[str]) -> str:
    return rule[rule.index("--comment") + 1] if "--comment" in rule else ""


def _dport_of(rule: list[str]) -> int | None:
    return int(rule[rule.index("--dport") + 1]) if "--dport" in rule else None


class RuleBook:
    """The rules one agent added, by port; removes them on request, or all of them at the end."""

    def __init__(self, tag: str, families: tuple[IptablesFamily, ...] = (IPV4, IPV6)) -> None:
        self.tag = tag
        self.families = tuple(family for family in families if family.available())
        self._added: dict[int, list[tuple[IptablesFamily, list[str]]]] = {}
        self.warnings: list[str] = []

    def redirect(self, port: int, to_port: int, override: bool = False) -> None:
        """Steal `port`: new connections go to `to_port`. IPv4 is required, IPv6 best effort.
        Another live agent's rules for the port make it PortTaken, or with `override` go."""
        if port in self._added:
            return
        self._refuse_if_stolen_elsewhere(port, override)
        added: list[tuple[IptablesFamily, list[str]]] = []
        try:
            for family in self.families:
                for rule in redirect_rules(port, to_port, self.tag):
                    try:
                        _iptables(family, "-A", rule)
                    except RuleError as error:
                        if family.version == 4:
                            raise
                        self.warnings.append(f"IPv6 traffic to port {port} is not stolen: {error}")
                        break
                    added.append((family, rule))
        except RuleError:
            for family, rule in reversed(added):
                _delete_quietly(family, rule)
            raise
        if not any(family.version == 4 for family, _ in added):
            raise RuleError("iptables (IPv4) is not installed in the agent's environment")
        self._added[port] = added

    def _refuse_if_stolen_elsewhere(self, port: int, override: bool) -> None:
        for family in self.families:
            try:
                rules = saved_rules(family)
            except RuleError:
                continue
            for rule in rules:
                comment = _comment_of(rule)
                if (
                    comment != self.tag
                    and _dport_of(rule) == port
                    and owner_is_alive(comment)
                ):
                    if override:
                        _delete_quietly(family, rule)
                        self.warnings.append(f"port {port} taken over from {comment}")
                        continue
                    raise PortTaken(
                        f"port {port} is stolen by another mirrord-trace session ({comment})"
                    )

    def release(self, port: int) -> None:
        for family, rule in reversed(self._added.pop(port, [])):
            _delete_quietly(family, rule)

    def release_all(self) -> None:
        for port in list(self._added):
            self.release(port)
        # Whatever else carries our tag (added by a request that failed half-way...).
        remove_rules(lambda comment: comment == self.tag, self.families)


def _iptables(family: IptablesFamily, action: str, rule: list[str]) -> None:
    _run([family.command, "-w", _LOCK_WAIT_SECONDS, "-t", "nat", action, *rule])


def _delete_quietly(family: IptablesFamily, rule: list[str]) -> bool:
    try:
        _iptables(family, "-D", rule)
    except RuleError:
        return False  # already gone (the guardian, or a new agent, was faster)
    return True


def remove_rules(
    doomed: Callable[[str], bool], families: tuple[IptablesFamily, ...] = (IPV4, IPV6)
) -> int:
    """Delete every rule of ours whose comment `doomed` selects; returns how many went."""
    removed = 0
    for family in families:
        if not family.available():
            continue
        try:
            rules = saved_rules(family)
        except RuleError:
            continue  # no nat table for this family here: nothing of ours either
        for rule in rules:
            if rule[0] in _CHAINS and doomed(_comment_of(rule)):
                removed += _delete_quietly(family, rule)
    return removed


def remove_abandoned_rules() -> int:
    """Delete the rules of agents that are gone (killed together with their guardian)."""
    return remove_rules(lambda comment: not owner_is_alive(comment))


def flush_connections(port: int) -> int:
    """Cut the namespace's open TCP connections to `port` (mirrord's agent.flush_connections):
    their conntrack entries go, so the next packet of each is NATed anew -- to the steal
    listener, which knows no such connection and resets it; the client reconnects and is
    stolen. Returns how many entries went. RuleError when conntrack is missing or fails."""
    if shutil.which("conntrack") is None:
        raise RuleError(
            "agent.flush_connections needs the conntrack tool in the agent's environment "
            "(apt-get install conntrack)"
        )
    flushed = 0
    for family in ("ipv4", "ipv6"):
        argv = ["conntrack", "-D", "-f", family, "-p", "tcp", "--orig-port-dst", str(port)]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise RuleError(f"conntrack could not run: {error}") from None
        # Exit status 1 with "0 flow entries" is "nothing to delete".
        found = re.search(r"(\d+) flow entr", done.stderr + done.stdout)
        if done.returncode != 0 and found is None:
            message = " ".join(done.stderr.split()) or f"exit status {done.returncode}"
            raise RuleError(f"conntrack -D ... --orig-port-dst {port}: {message}")
        flushed += int(found.group(1)) if found else 0
    return flushed
