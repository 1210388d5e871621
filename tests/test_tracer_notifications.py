"""Trapped calls decided through seccomp user notifications (no ptrace stop) behave like the
ptrace path: answers and memory writes reach the program, children and threads are served,
handler failures are one line and an errno, and signals cannot turn a decided call into EINTR.

Real static, musl, dynamic and Go programs under the real supervisor; the tables of the first
tests are built by hand, the way feature families build theirs (with Notify rules).
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import pytest

from mirrord_trace.config import Config
from mirrord_trace.handlers.actions import ALLOW, Action, Emulate, Rewrite
from mirrord_trace.handlers.call import SyscallCall
from mirrord_trace.session import SessionContext, TrapTable, build_trap_table
from mirrord_trace.syscall_table import FS_PATH_SYSCALLS, SYSCALL_NUMBERS, describe
from mirrord_trace.tracer.dispatch import TrapEntry
from seccomp import Notify, Rule
from tests.conftest import ROOT, example_binary
from tests.test_tracer_actions import MAGIC, run_traced

MIRRORD_TRACE = [str(ROOT / ".venv" / "bin" / "mirrord-trace"), "exec"]
PROBES = ["probe-static", "probe-musl", "probe-dynamic", "probe-go"]


def notified_table(handler, names: tuple[str, ...] = ("open", "openat", "readlink",
                                                          "readlinkat")) -> TrapTable:
    """Notify rules for `names`; the handler sees every call with the path as `path`."""
    entries: dict[int, TrapEntry] = {}
    for name in names:
        shape = FS_PATH_SYSCALLS[name]
        index = shape.arg_index("path")

        def entry_handler(call: SyscallCall, index: int | None = index) -> Action | None:
            return handler(call, call.string_arg(index), call.args)

        entries[SYSCALL_NUMBERS[name]] = TrapEntry(name, entry_handler,
                                                   lambda c, s=shape: describe(s, c))
    return TrapTable([Rule(nr, Notify()) for nr in entries], [None], entries)


@pytest.mark.parametrize("binary", PROBES)
def test_notified_calls_run_or_are_answered(binary: str, tmp_path: Path) -> None:
    """Allow lets the call run; Emulate's result and memory writes reach the program."""
    real = tmp_path / "real.txt"
    real.write_text("real content\n")

    def handler(call: SyscallCall, path: bytes, args: tuple[int, ...]) -> Action | None:
        if path != MAGIC:
            return None
        if call.nr in (SYSCALL_NUMBERS["readlink"], SYSCALL_NUMBERS["readlinkat"]):
            buffer = args[1] if call.nr == SYSCALL_NUMBERS["readlink"] else args[2]
            return Emulate(len(b"/answered/by/supervisor"),
                           writes=((buffer, b"/answered/by/supervisor"),))
        return Emulate(-errno.EACCES)

    probe = str(example_binary(binary))
    table = notified_table(handler)
    assert run_traced(table, [probe, "cat", str(real)]).stdout == b"real content\n"
    link = run_traced(table, [probe, "readlink", MAGIC.decode()])
    assert (link.returncode, link.stdout) == (0, b"/answered/by/supervisor\n"), link.stderr
    denied = run_traced(table, [probe, "cat", MAGIC.decode()])
    assert denied.returncode == errno.EACCES if binary != "probe-go" else denied.returncode != 0
    assert os.strerror(errno.EACCES).lower() in denied.stderr.decode().lower()


def test_threads_and_forked_children_are_served(tmp_path: Path) -> None:
    """80 threads at once, and a forked child that execs a Go program, all get answers."""
    seen: list[int] = []

    def handler(call: SyscallCall, path: bytes, args: tuple[int, ...]) -> Action | None:
        if path == MAGIC:
            seen.append(call.tid)
            return Emulate(-errno.ENOTDIR)
        return None

    table = notified_table(handler)
    threads = run_traced(table, [str(example_binary("probe-static")), "threads", "80", "50",
                                 MAGIC.decode()])
    # Each thread's open fails with our ENOTDIR: the probe reports it and exits with it.
    assert threads.returncode == errno.ENOTDIR, threads.stderr
    forked = run_traced(table, [str(example_binary("probe-static")), "fork-exec",
                                str(example_binary("probe-go")), "cat", MAGIC.decode()])
    assert forked.returncode != 0
    assert os.strerror(errno.ENOTDIR).lower() in forked.stderr.decode().lower()


def test_a_failing_handler_fails_the_call_and_says_so_once(tmp_path: Path) -> None:
    def handler(call: SyscallCall, path: bytes, args: tuple[int, ...]) -> Action | None:
        if path == MAGIC:
            raise ConnectionResetError(errno.ECONNRESET, "agent went away")
        return None

    out = run_traced(notified_table(handler),
                     [str(example_binary("probe-static")), "cat", MAGIC.decode(), MAGIC.decode()])
    assert out.returncode == errno.ECONNRESET
    report = [line for line in out.stderr.decode().splitlines() if "supervisor" in line]
    assert len(report) == 1 and "ECONNRESET" in report[0], out.stderr


def test_a_ptrace_only_action_from_a_notified_handler_is_refused_not_run(
    tmp_path: Path,
) -> None:
    """A Rewrite cannot be carried out through a notification: the call must fail (EIO),
    not run with the program's own arguments as if it had been decided."""
    real = tmp_path / "real.txt"
    real.write_text("must not be read\n")

    def handler(call: SyscallCall, path: bytes, args: tuple[int, ...]) -> Action | None:
        return Rewrite({1: str(real).encode() + b"\0"}) if path == MAGIC else ALLOW

    out = run_traced(notified_table(handler),
                     [str(example_binary("probe-static")), "cat", MAGIC.decode()])
    assert out.returncode == errno.EIO
    assert b"must not be read" not in out.stdout
    assert b"needs a ptrace stop" in out.stderr


def test_targetless_sessions_use_notifications_and_trace_keeps_ptrace() -> None:
    """Without --trace the fs family's decisions go through notifications (no ptrace stop);
    --trace needs each call's result, which only a ptrace exit stop can report."""
    quiet = build_trap_table(SessionContext(Config(), program="/bin/true"))
    assert set(quiet.notified) == {shape.nr for shape in FS_PATH_SYSCALLS.values()}
    assert all(entry is None for entry in quiet.dispatch)
    traced = build_trap_table(SessionContext(Config(), explain=True, program="/bin/true"))
    assert not traced.notified
    assert {e.name for e in traced.dispatch if e is not None} == set(FS_PATH_SYSCALLS)


@pytest.mark.parametrize("binary", ["probe-static", "probe-musl", "probe-dynamic"])
def test_signals_do_not_turn_decided_calls_into_eintr(binary: str, tmp_path: Path) -> None:
    """A SIGALRM handler without SA_RESTART fires every 200 us during 4,000 stats and opens:
    natively none of them fails with EINTR, and under mirrord-trace none does either (a signal
    that withdraws a notification before it is answered restarts the call)."""
    target = tmp_path / "file"
    target.write_text("x")
    out = subprocess.run([*MIRRORD_TRACE, "--", str(example_binary(binary)), "stat-signals",
                          "2000", str(target)], capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr
    counts = dict(field.split("=") for field in out.stdout.decode().split())
    assert int(counts["signals"]) > 0  # the timer really interrupted the run
    assert counts["eintr"] == "0", out.stdout


def test_an_open_that_blocks_natively_is_still_interrupted(tmp_path: Path) -> None:
    """alarm(1) then open() of a FIFO nobody writes to: EINTR after a second, as natively."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    config = tmp_path / "config.json"
    # not_found makes the fs family trap opens even here, so the open is a notified call.
    config.write_text(json.dumps({"feature": {"fs": {"not_found": ["^/nowhere$"]}}}))
    out = subprocess.run([*MIRRORD_TRACE, "-f", str(config), "--",
                          str(example_binary("probe-static")), "alarm-open", str(fifo)],
                         capture_output=True, timeout=60)
    assert out.returncode == errno.EINTR, out.stderr
    assert b"Interrupted system call" in out.stderr
