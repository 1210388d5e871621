"""The configuration's own subcommand, `verify-config` (added to the CLI on first use)."""

from __future__ import annotations

import json

import click

from mirrord_trace.config.verify import verify_config


@click.command("verify-config")
@click.option("--ide", is_flag=True, help="As IDE extensions ask: no target means 'ask'.")
@click.argument("path", metavar="FILE")
def verify_config_command(ide: bool, path: str) -> None:
    """Check a mirrord configuration FILE ('-': stdin); print mirrord's JSON verdict.

    \b
    {"type": "Success", "config": {...}, "warnings": [...], ...}
    {"type": "Fail", "errors": [...]}

    The exit status is 0 either way, as with mirrord: read the verdict from "type".
    """
    click.echo(json.dumps(verify_config(path, ide=ide), indent=2))
