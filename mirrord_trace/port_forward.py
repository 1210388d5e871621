"""`mirrord-trace port-forward -L [LOCAL_PORT:]HOST:PORT`: as mirrord's, a local port whose
connections are made from the target.

Each mapping listens on 127.0.0.1:LOCAL_PORT (LOCAL_PORT defaults to PORT). For every
connection accepted there, HOST is resolved the way a program in the target would resolve it
(the agent's dns.getaddrinfo: the target's /etc/hosts and resolv.conf, so cluster names work),
the agent connects to it from the target's network namespace, and the two are joined: many
connections at once, each in its own agent stream. Runs until Ctrl-C (or SIGTERM/SIGHUP);
a connection that cannot be made is closed and reported on stderr, the others go on.
"""

from __future__ import annotations

import ipaddress
import re
import selectors
import socket
import threading
from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from typing import Any

import click

from mirrord_trace.session_command import load_target_config, target_options

CONNECT_TIMEOUT = 10.0
_MAPPING = re.compile(r"(?:(?P<local>\d+):)?(?P<host>\[[^\]]+\]|[^:\[\]]+):(?P<port>\d+)")


@dataclass(frozen=True, slots=True)
class Mapping:
    local_port: int
    host: str  # a host name, an IPv4 address or an IPv6 address (without brackets)
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"127.0.0.1:{self.local_port} -> {host}:{self.port}"


def parse_mapping(text: str) -> Mapping:
    """`[LOCAL_PORT:]HOST:PORT` (IPv6 hosts in brackets); ValueError saying what is wrong."""
    match = _MAPPING.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not [LOCAL_PORT:]HOST:PORT")
    port = int(match["port"])
    local = int(match["local"]) if match["local"] is not None else port
    for value in (port, local):
        if not 1 <= value <= 65535:
            raise ValueError(f"{text!r}: port {value} is not from 1 to 65535")
    host = match["host"].removeprefix("[").removesuffix("]")
    if match["host"].startswith("["):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{text!r}: {host!r} in brackets is not an IPv6 address") from None
    return Mapping(local, host, port)


class _MappingType(click.ParamType):
    name = "[LOCAL_PORT:]HOST:PORT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, Mapping):
            return value
        try:
            return parse_mapping(value)
        except ValueError as error:
            self.fail(str(error), param, ctx)


class Forwarder:
    """Listens for each mapping and joins every accepted connection to an agent stream."""

    def __init__(self, client: Any, mappings: list[Mapping], report: Callable[[str], None]):
        self.client = client
        self.report = report
        self.listeners: dict[socket.socket, Mapping] = {}
        for mapping in mappings:
            self.listeners[_listen(mapping)] = mapping
        self._stop_read, self._stop_write = socket.socketpair()

    def close(self) -> None:
        self.stop()
        for listener in self.listeners:
            listener.close()
        self._stop_read.close()
        self._stop_write.close()

    def stop(self) -> None:
        with suppress(OSError):
            self._stop_write.send(b"x")

    def serve(self) -> None:
        """Accept until stop() (or the agent is lost)."""
        with selectors.DefaultSelector() as selector:
            for listener in self.listeners:
                selector.register(listener, selectors.EVENT_READ)
            selector.register(self._stop_read, selectors.EVENT_READ)
            while not self.client.lost:
                for key, _ in selector.select(timeout=1.0):
                    if key.fileobj is self._stop_read:
                        return
                    listener = key.fileobj
                    assert isinstance(listener, socket.socket)
                    try:
                        connection, _ = listener.accept()
                    except OSError:
                        continue
                    threading.Thread(
                        target=self._join,
                        args=(connection, self.listeners[listener]),
                        name="port-forward",
                        daemon=True,
                    ).start()

    def _join(self, connection: socket.socket, mapping: Mapping) -> None:
        from mirrord_trace.agent_client import RemoteError

        try:
            family, address = self._resolve(mapping.host)
            stream_id, reply = self.client.start_stream(
                family=family,
                host=address,
                port=mapping.port,
                transport="tcp",
                timeout=CONNECT_TIMEOUT,
            )
            reply.result()
        except RemoteError as error:
            self.report(f"cannot connect to {mapping.host}:{mapping.port} in the target: {error}")
            _reset(connection)
            return
        self.client.attach_stream(stream_id, connection)

    def _resolve(self, host: str) -> tuple[int, str]:
        """(family, address) of `host` as seen from the target."""
        from mirrord_trace.agent_client import RemoteError

        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            return (socket.AF_INET if address.version == 4 else socket.AF_INET6), str(address)
        found = self.client.request("dns.getaddrinfo", host=host, family=0)["addresses"]
        if not found:
            raise RemoteError(0, f"the target cannot resolve {host!r}")
        # As getaddrinfo's callers do: the first answer (IPv4 first when there are both).
        found.sort(key=lambda entry: entry["family"] != socket.AF_INET)
        return found[0]["family"], found[0]["address"]


def _listen(mapping: Mapping) -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("127.0.0.1", mapping.local_port))
        listener.listen(128)
    except OSError as error:
        listener.close()
        from mirrord_trace.exec_run import UserError

        raise UserError(
            f"cannot listen on 127.0.0.1:{mapping.local_port}: {error.strerror or error}",
            "choose another local port: -L LOCAL_PORT:HOST:PORT",
        ) from None
    listener.setblocking(False)
    return listener


def _reset(connection: socket.socket) -> None:
    """Close with RST, so the local client sees the failure at once."""
    with suppress(OSError):
        connection.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
        )
    connection.close()


@click.command("port-forward")
@target_options
@click.option(
    "-L",
    "--port-mapping",
    "mappings",
    type=_MappingType(),
    multiple=True,
    required=True,
    help="[LOCAL_PORT:]HOST:PORT, HOST resolved and reached from the target (repeatable).",
)
def port_forward_command(
    target: str | None,
    target_namespace: str | None,
    kube_context: str | None,
    config_file: str | None,
    mappings: tuple[Mapping, ...],
) -> None:
    """Forward local ports to HOST:PORT as reached from the target.

    \b
    mirrord-trace port-forward -t pod/web -L 5432:db.shop.svc:5432
    """
    from mirrord_trace.exec_run import PROG, UserError, start_session
    from mirrord_trace.signal_mask import termination_interrupts

    cfg = load_target_config(
        "port-forward", target, target_namespace, kube_context, config_file
    )
    def report(line: str) -> None:
        click.echo(f"{PROG}: {line}", err=True)

    with ExitStack() as stack:
        try:
            with termination_interrupts():
                client, _ = start_session(cfg.target.resolved, cfg, stack)
                forwarder = Forwarder(client, list(mappings), report)
                stack.callback(forwarder.close)
                for mapping in mappings:
                    report(f"forwarding {mapping} (from {cfg.target.resolved})")
                forwarder.serve()
        except KeyboardInterrupt:
            return
        if client.lost:
            raise UserError("the agent was lost", "check the target and start again", 1)
