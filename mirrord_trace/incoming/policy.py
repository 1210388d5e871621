"""Which of the program's listening ports get the target's traffic, and how (mirrord semantics).

The program listens on a *local* port L (the one it asks for, and the one getsockname reports);
the traffic comes from the target's *remote* port R = port_mapping[L] (default L); the socket
really listens on this machine on listen_ports[L] (default: any free port).

- mode off: nothing is subscribed;
- `ignore_ports` / `ports` select by L; `ignore_localhost` leaves loopback listeners local;
- stealing with an HTTP filter: the filter applies on R when R is in `http_filter.ports`;
  other ports are not stolen at all unless `ports` lists them (then they are stolen whole).
"""

from __future__ import annotations

from dataclasses import dataclass

from mirrord_trace.config.model import IncomingConfig, IncomingMode
from mirrord_trace.net.sockaddr import InetAddress


@dataclass(frozen=True, slots=True)
class PortDecision:
    remote_port: int
    local_port: int  # 0: any free port
    mode: str  # "mirror" | "steal"
    header_filter: str = ""
    path_filter: str = ""

    @property
    def filtered(self) -> bool:
        return bool(self.header_filter or self.path_filter)

    def describe(self) -> str:
        what = f"{self.mode} remote port {self.remote_port}"
        if self.filtered:
            parts = [f"header {self.header_filter!r}"] if self.header_filter else []
            parts += [f"path {self.path_filter!r}"] if self.path_filter else []
            what += f" (HTTP requests matching {' and '.join(parts)})"
        return what


class IncomingPolicy:
    def __init__(self, config: IncomingConfig) -> None:
        self.config = config
        self._remote = dict(config.port_mapping)
        self._local = dict(config.listen_ports)

    @property
    def enabled(self) -> bool:
        return self.config.mode != IncomingMode.OFF

    def decide(self, address: InetAddress) -> PortDecision | None:
        """What a listener on `address` gets; None when it stays purely local."""
        config = self.config
        port = address.port
        if not self.enabled or port == 0:
            return None
        if config.ignore_localhost and address.is_loopback:
            return None
        if port in config.ignore_ports:
            return None
        listed = config.ports is not None and port in config.ports
        if config.ports is not None and not listed:
            return None
        remote = self._remote.get(port, port)
        local = self._local.get(port, 0)
        if config.mode == IncomingMode.MIRROR:
            return PortDecision(remote, local, "mirror")
        http = config.http_filter
        if not http.is_set:
            return PortDecision(remote, local, "steal")
        if remote in http.ports:
            return PortDecision(
                remote,
                local,
                "steal",
                http.header_filter.pattern if http.header_filter is not None else "",
                http.path_filter.pattern if http.path_filter is not None else "",
            )
        return PortDecision(remote, local, "steal") if listed else None
