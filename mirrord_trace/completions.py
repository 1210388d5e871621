"""`mirrord-trace completions SHELL`: the shell completion script, as `mirrord completions`.

The script is click's: it calls mirrord-trace back (with _MIRRORD_TRACE_COMPLETE set) to
complete subcommands, flags and choices.

    mirrord-trace completions bash > /etc/bash_completion.d/mirrord-trace
    mirrord-trace completions zsh > "${fpath[1]}/_mirrord-trace"
    mirrord-trace completions fish > ~/.config/fish/completions/mirrord-trace.fish
"""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

COMPLETE_VARIABLE = "_MIRRORD_TRACE_COMPLETE"
SHELLS = ("bash", "zsh", "fish")


@click.command("completions")
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completions_command(ctx: click.Context, shell: str) -> None:
    """Print the completion script for SHELL (bash, zsh or fish)."""
    root = ctx.find_root().command
    completion_class = get_completion_class(shell)
    assert completion_class is not None  # every shell of SHELLS has one
    script = completion_class(root, {}, "mirrord-trace", COMPLETE_VARIABLE).source()
    click.echo(script, nl=False)
