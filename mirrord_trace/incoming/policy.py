"""Which of the program's listening ports get the target's traffic, and how (mirrord semantics).

The program listens on a *local* port L (the one it asks for, and the one getsockname reports);
the traffic comes from the target's *remote* port R = port_mapping[L] (default L); the socket
really listens on this machine on listen_ports[L] (default: any free port).

- mode off: nothing is subscribed;
- `ignore_ports` / `ports` select by L; `ignore_localhost` leaves loopback listeners local;
- stealing with an HTTP filter: the filter applies on R when `http_filter.ports` lists R or
  is absent (mirrord 3.250); other stolen ports are stolen whole.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mirrord_trace.config.model import IncomingConfig, IncomingMode
from mirrord_trace.net.sockaddr import InetAddress


@dataclass(frozen=True, slots=True)
class PortDecision:
    remote_port: int
    local_port: int  # 0: any free port
    mode: str  # "mirror" | "steal"
    http_filter: Mapping[str, Any] | None = None  # the wire tree (config.http_filter)
    on_concurrent_steal: str = "abort"  # when another session steals the port

    @property
    def filtered(self) -> bool:
        return self.http_filter is not None

    def describe(self) -> str:
        what = f"{self.mode} remote port {self.remote_port}"
        if self.http_filter is not None:
            what += f" (HTTP requests matching {json.dumps(self.http_filter)})"
        return what


class IncomingPolicy:
    def __init__(self, config: IncomingConfig, flush_connections: bool = False) -> None:
        self.config = config
        self.flush_connections = flush_connections  # agent.flush_connections
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
        if config.ports is not None and port not in config.ports:
            return None
        remote = self._remote.get(port, port)
        local = self._local.get(port, 0)
        if config.mode == IncomingMode.MIRROR:
            return PortDecision(remote, local, "mirror")
        http = config.http_filter
        wire = http.wire if http.applies_to(remote) else None
        return PortDecision(remote, local, "steal", wire, str(config.on_concurrent_steal))
