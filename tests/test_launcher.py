"""The console script's click-free path for a plain `exec` (mirrord_trace.launcher): whatever it
accepts, click parses to the same program and the same values; whatever it does not accept goes
to click; and running `exec -- PROGRAM` that way imports no click at all."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from typing import Any

import click
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mirrord_trace.cli import exec_command
from mirrord_trace.launcher import COMPLETION_VARIABLE, FLAGS, VALUE_OPTIONS, parse_plain_exec


def click_parse(args: list[str]) -> tuple[tuple[str, ...], dict[str, Any]] | None:
    """(program, the other values) as click hands them to `exec`, or None if click refuses."""
    assert args[0] == "exec"
    try:
        ctx = exec_command.make_context("exec", list(args[1:]))
    except click.ClickException:
        return None
    params = dict(ctx.params)
    return params.pop("program"), params


def same_as_click(args: list[str]) -> None:
    plain = parse_plain_exec(args)
    if plain is None:
        return
    clicked = click_parse(args)
    assert clicked is not None, f"click refuses {args}, the launcher accepted it"
    program, options = plain
    click_program, click_values = clicked
    assert program == click_program
    assert set(options) <= set(click_values)
    for name, click_value in click_values.items():
        default = False if name in FLAGS.values() else None
        assert options.get(name, default) == click_value, name


def test_the_option_tables_are_exec_s_options() -> None:
    values, flags = {}, {}
    for param in exec_command.params:
        if isinstance(param, click.Option):
            table = flags if param.is_flag else values
            table.update(dict.fromkeys([*param.opts, *param.secondary_opts], param.name))
    assert values == VALUE_OPTIONS
    assert flags == FLAGS


@pytest.mark.parametrize(
    "args",
    [
        ["exec", "--", "/bin/true"],
        ["exec", "/bin/true"],
        ["exec", "/bin/echo", "--", "-x", "--steal"],
        ["exec", "--", "/bin/echo", "--"],
        ["exec", "--", ""],
        ["exec", "-t", "pid/42", "-n", "shop", "--steal", "--", "./server", "--port", "1"],
        ["exec", "--target", "deployment/api/container/app", "--context", "kind", "--", "x"],
        ["exec", "--fs-mode", "localwithoverrides", "--trace", "out.txt", "--", "x"],
        ["exec", "-s", "A;B_*", "-x", "C?", "--agent-ttl", "0", "--", "x"],
        ["exec", "--agent-ttl", "65535", "--no-outgoing", "--no-udp-outgoing", "x"],
        ["exec", "-f", "", "--context", "", "--", "x"],
        ["exec", "--no-remote-dns", "--no-tcp-outgoing", "--ephemeral-container", "--", "x"],
    ],
)
def test_plain_forms_run_without_click_and_agree_with_it(args: list[str]) -> None:
    assert parse_plain_exec(args) is not None
    same_as_click(args)


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--version"],
        ["ls"],
        ["exec"],
        ["exec", "--"],
        ["exec", "--steal"],
        ["exec", "-h"],
        ["exec", "--help", "--", "x"],
        ["exec", "--target=pid/1", "--", "x"],
        ["exec", "-tpid/1", "--", "x"],
        ["exec", "--steal", "--steal", "--", "x"],
        ["exec", "-t", "pid/1", "--target", "pid/2", "--", "x"],
        ["exec", "--target", "--steal", "--", "x"],
        ["exec", "--trace", "-", "--", "x"],
        ["exec", "--trace"],
        ["exec", "--target", "pod/Not_A_Name", "--", "x"],
        ["exec", "-n", "Shop", "--", "x"],
        ["exec", "--fs-mode", "LOCAL", "--", "x"],
        ["exec", "-s", "A=B", "--", "x"],
        ["exec", "--agent-ttl", "65536", "--", "x"],
        ["exec", "--agent-ttl", "+5", "--", "x"],
        ["exec", "--agent-ttl", "٣", "--", "x"],
        ["exec", "--unknown", "--", "x"],
        ["exec", "-", "x"],
        ["sandbox", "up"],
    ],
)
def test_other_forms_go_to_click(args: list[str]) -> None:
    assert parse_plain_exec(args) is None


TOKENS = [
    *VALUE_OPTIONS,
    *FLAGS,
    "--",
    "-",
    "",
    "-h",
    "--help",
    "--target=pid/1",
    "-tpid/1",
    "pid/1",
    "pod/api",
    "pod/api/container/app",
    "deployment/x/y",
    "targetless",
    "shop",
    "Shop",
    "local",
    "read",
    "A;B*",
    "A=B",
    "0",
    "65535",
    "70000",
    " 5",
    "/bin/true",
    "prog",
]


@given(st.lists(st.sampled_from(TOKENS), max_size=8))
def test_whatever_the_launcher_accepts_click_parses_the_same(tail: list[str]) -> None:
    same_as_click(["exec", *tail])


def test_the_console_script_is_the_launcher() -> None:
    (script,) = [
        entry
        for entry in importlib.metadata.entry_points(group="console_scripts")
        if entry.name == "mirrord-trace"
    ]
    assert script.value == "mirrord_trace.launcher:main"


def test_completion_goes_to_click() -> None:
    assert COMPLETION_VARIABLE == "_MIRRORD_TRACE_COMPLETE"


def test_exec_true_imports_no_click() -> None:
    code = (
        "import atexit, sys\n"
        "from mirrord_trace.launcher import main\n"
        "atexit.register(lambda: print('click' in sys.modules))\n"
        "main(['exec', '--', '/bin/true'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert (result.returncode, result.stdout) == (0, "False\n"), result.stderr


def test_the_quick_exit_keeps_what_exit_does() -> None:
    code = (
        "import atexit, sys, threading, time\n"
        "from mirrord_trace.launcher import exit_without_teardown\n"
        "atexit.register(lambda: print('atexit ran'))\n"
        "def late():\n"
        "    time.sleep(0.2)\n"
        "    print('thread finished')\n"
        "threading.Thread(target=late).start()\n"
        "sys.stdout.write('buffered ')\n"
        "exit_without_teardown(3)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 3, result.stderr
    assert result.stdout == "buffered thread finished\natexit ran\n"
