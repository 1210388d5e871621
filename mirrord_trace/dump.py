"""`mirrord-trace dump -t TARGET -p PORT...`: print the traffic arriving at the target's ports.

As `mirrord dump`: the agent mirrors each port (a copy; the target still answers), and every
connection's bytes are printed as they come, in mirrord's format:

    ## New connection 2: 10.0.0.7:51234 -> port 8080
    ## Connection ID 2: 18 bytes
    Data:
    GET / HTTP/1.1
    ...
    ## Connection ID 2 closed

Bytes that are not UTF-8 are printed in hex (`Data (hex):`). Runs until Ctrl-C.
"""

from __future__ import annotations

import threading
from contextlib import ExitStack
from typing import Any, TextIO

import click

from mirrord_trace.session_command import load_target_config, target_options

_READ_SIZE = 64 * 1024


class Dumper:
    """AgentClient.on_stream_open: one reader thread per mirrored connection."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.lock = threading.Lock()

    def print(self, text: str) -> None:
        with self.lock:
            self.out.write(text + "\n")
            self.out.flush()

    def on_stream_open(self, stream: Any) -> None:
        peer = stream.info.get("peer") or ("?", 0)
        host = f"[{peer[0]}]" if ":" in str(peer[0]) else peer[0]
        self.print(
            f"## New connection {stream.stream_id}: {host}:{peer[1]} -> "
            f"port {stream.info.get('port')}"
        )
        threading.Thread(target=self._read, args=(stream,), name="dump", daemon=True).start()

    def _read(self, stream: Any) -> None:
        with stream.socket as sock:
            while True:
                try:
                    data = sock.recv(_READ_SIZE)
                except OSError:
                    data = b""
                if not data:
                    self.print(f"## Connection ID {stream.stream_id} closed")
                    return
                try:
                    shown = "Data:\n" + data.decode("utf-8")
                except UnicodeDecodeError:
                    shown = "Data (hex):\n" + data.hex()
                self.print(f"## Connection ID {stream.stream_id}: {len(data)} bytes\n{shown}")


@click.command("dump")
@target_options
@click.option(
    "-p",
    "--ports",
    "ports",
    type=click.IntRange(1, 65535),
    multiple=True,
    required=True,
    help="A port of the target to dump (repeatable).",
)
def dump_command(
    target: str | None,
    target_namespace: str | None,
    kube_context: str | None,
    config_file: str | None,
    ports: tuple[int, ...],
) -> None:
    """Print the traffic that arrives at the target's PORTS (mirrored: the target still answers).

    \b
    mirrord-trace dump -t pod/web -p 8080
    """
    from mirrord_trace.agent_client import RemoteError
    from mirrord_trace.exec_run import PROG, UserError, start_session
    from mirrord_trace.signal_mask import termination_interrupts

    cfg = load_target_config(
        "dump", target, target_namespace, kube_context, config_file
    )
    dumper = Dumper(click.get_text_stream("stdout"))
    stop = threading.Event()
    with ExitStack() as stack:
        try:
            with termination_interrupts():
                client, _ = start_session(cfg.target.resolved, cfg, stack)
                client.on_stream_open = dumper.on_stream_open
                for port in ports:
                    try:
                        client.request("incoming.subscribe", port=port, mode="mirror")
                    except RemoteError as error:
                        raise UserError(
                            f"cannot mirror port {port} of {cfg.target.resolved}: {error}",
                            "check the port and that the agent may capture there",
                            1,
                        ) from None
                    click.echo(f"{PROG}: dumping port {port} of {cfg.target.resolved}", err=True)
                while not client.lost:
                    stop.wait(0.5)
        except KeyboardInterrupt:
            return
        raise UserError("the agent was lost", "check the target and start again", 1)
