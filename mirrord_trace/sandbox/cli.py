"""`mirrord-trace sandbox up|status|down`: the sandbox pod from the command line."""

from __future__ import annotations

import sys

import click

from mirrord_trace.sandbox import lifecycle
from mirrord_trace.sandbox.errors import SandboxError, SandboxExistsError
from mirrord_trace.sandbox.info import SandboxInfo
from mirrord_trace.sandbox.plan import DEFAULT_NAME, InvalidSandboxName, validate_name

# status exit codes: scripts can tell "absent" from "present but broken".
EXIT_ABSENT = 1
EXIT_BROKEN = 2


def _checked_name(_context: click.Context, _parameter: click.Parameter, value: str) -> str:
    try:
        return validate_name(value)
    except InvalidSandboxName as error:
        raise click.BadParameter(str(error)) from error


_name_option = click.option(
    "--name",
    default=DEFAULT_NAME,
    show_default=True,
    callback=_checked_name,
    help="Sandbox name (several sandboxes can run side by side).",
)


def _note(message: str) -> None:
    click.echo(message, err=True)


@click.group(name="sandbox")
def sandbox_group() -> None:
    """A local stand-in for a Kubernetes pod: network namespace, root filesystem, cluster DNS,
    a cluster-only service and a chrooted target process. Needs root."""


@sandbox_group.command("up")
@_name_option
def up_command(name: str) -> None:
    """Build the sandbox pod (says so if it is already up)."""
    try:
        info = lifecycle.up(name, report=_note)
    except SandboxExistsError as error:
        _note(f"sandbox {name!r} is already up (target pid {error.info.target_pid})")
        return
    except SandboxError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"sandbox {name!r} is up: target pid {info.target_pid}, app {info.app_url}")
    click.echo(f"details: mirrord-trace sandbox status --name {name}")


@sandbox_group.command("status")
@_name_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status_command(name: str, as_json: bool) -> None:
    """Describe the sandbox. Exit status: 0 healthy, 1 absent, 2 present but broken."""
    try:
        info = lifecycle.status(name)
    except SandboxError as error:
        raise click.ClickException(str(error)) from error
    if info is None:
        _note(f"no sandbox named {name!r} (start one with: mirrord-trace sandbox up --name {name})")
        sys.exit(EXIT_ABSENT)
    click.echo(info.to_json() if as_json else _summary(info))
    if not info.healthy:
        sys.exit(EXIT_BROKEN)


@sandbox_group.command("down")
@_name_option
def down_command(name: str) -> None:
    """Remove the sandbox: processes, namespace, links, routes, files and state."""
    try:
        removed = lifecycle.down(name)
    except SandboxError as error:
        raise click.ClickException(str(error)) from error
    if removed:
        click.echo(f"sandbox {name!r} removed")
    else:
        click.echo(f"no sandbox named {name!r}; nothing to do")


def _summary(info: SandboxInfo) -> str:
    health = "up" if info.healthy else "BROKEN: " + "; ".join(info.problems)
    lines = [
        f"sandbox {info.name}: {health}",
        f"  target      pid {info.target_pid}, {info.app_url} (hostname {info.hostname})",
        f"  root        {info.root}",
        f"  network     netns {info.netns}; host {info.host_veth} {info.host_addr}/"
        f"{info.link_prefixlen} <-> pod {info.pod_veth} {info.target_addr}/{info.link_prefixlen}",
        f"  dns         {info.dns_addr}:{info.dns_port} (cluster-only; query log {info.dns_log})",
        f"  service     {info.service_addr}: http :{info.service_port}, echo tcp+udp "
        f":{info.echo_port} (cluster-only)",
    ]
    entries = [f"{name} -> {address}" for name, address in info.names.items()]
    entries += [f"{name} -> {', '.join(addrs)}" for name, addrs in info.multi_names.items()]
    entries += [f"{name} -> {address} (pod /etc/hosts)" for name, address in
                info.hosts_entries.items()]  # fmt: skip
    lines += [f"  {'names' if number == 0 else '':<11} {entry}" for number, entry in
              enumerate(entries)]  # fmt: skip
    lines += [
        f"  APP_SECRET  {info.app_secret}",
        f"  logs        {info.logs_dir}",
    ]
    return "\n".join(lines)
