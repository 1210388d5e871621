"""mirrord's `exec` flags that set configuration keys, beyond the ones `exec` always had.

As mirrord's CLI does (it passes its flags on as MIRRORD_* variables), each becomes a dotted
key set over the file and the variables (CliOverrides.settings), so one code path validates
it and an error names the flag. Kept apart from mirrord_trace.cli so that the command line
stays readable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

F = Callable[..., Any]

# click parameter name -> (dotted key, the flag as shown in errors)
FLAG_KEYS = {
    "agent_namespace": ("agent.namespace", "-a/--agent-namespace"),
    "agent_image": ("agent.image", "-i/--agent-image"),
    "agent_log_level": ("agent.log_level", "-l/--agent-log-level"),
    "agent_startup_timeout": ("agent.startup_timeout", "--agent-startup-timeout"),
    "skip_processes": ("skip_processes", "--skip-processes"),
    "accept_invalid_certificates": (
        "accept_invalid_certificates",
        "-c/--accept-invalid-certificates",
    ),
    "env_file": ("feature.env.env_file", "--env-file"),
}

_OPTIONS = [
    click.option("-a", "--agent-namespace", metavar="NS", help="Namespace of the agent pod."),
    click.option("-i", "--agent-image", metavar="IMAGE", help="The agent's image."),
    click.option(
        "-l", "--agent-log-level", metavar="LEVEL", help="mirrord's agent log level (ignored)."
    ),
    click.option(
        "--agent-startup-timeout",
        type=click.IntRange(1),
        metavar="SECONDS",
        help="How long to wait for the agent.",
    ),
    click.option(
        "--skip-processes", metavar="NAMES", help="Processes that run untouched (';'-separated)."
    ),
    click.option(
        "-c",
        "--accept-invalid-certificates",
        type=click.BOOL,
        is_flag=False,
        flag_value="true",
        default=None,
        help="Do not verify the API server's certificate (=false: do).",
    ),
    click.option("--env-file", metavar="FILE", help="A .env file whose variables win."),
    click.option("-k", "--key", metavar="KEY", help="The session key ({{ key }})."),
    click.option("--no-telemetry", is_flag=True, help="Accepted: mirrord-trace sends none."),
    click.option(
        "--disable-version-check", is_flag=True, help="Accepted: mirrord-trace checks none."
    ),
]


def mirrord_exec_options(command: F) -> F:
    for option in reversed(_OPTIONS):
        command = option(command)
    return command


def flag_settings(values: dict[str, Any]) -> tuple[tuple[str, Any, str], ...]:
    """The given flags as (dotted key, value, where it came from)."""
    return tuple(
        (key, values[name], f"the {flag} flag")
        for name, (key, flag) in FLAG_KEYS.items()
        if values.get(name) is not None
    )
