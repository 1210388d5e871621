"""Each handler action works on real programs: emulate, rewrite (via scratch page), exit stop.

The trap tables here are built by hand, the way feature handlers build theirs; the programs are
real static and dynamic binaries, traced through the real supervisor.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from mirrord_trace.handlers.actions import ALLOW, Action, Emulate, ExitStop, Inject, Rewrite
from mirrord_trace.handlers.call import SyscallCall
from mirrord_trace.session import TrapTable
from mirrord_trace.supervisor import run
from mirrord_trace.syscall_table import FS_PATH_SYSCALLS, SYSCALL_NUMBERS, describe
from mirrord_trace.tracer.loop import TrapEntry
from seccomp import Rule, Trace
from tests.conftest import example_binary

MAGIC = b"/mirrord-trace-test/redirect"


def run_traced(table: TrapTable, argv: list[str]) -> subprocess.CompletedProcess:
    """Runs the supervisor in a forked child so each test gets a fresh tracer process."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
                # The supervisor reports on sys.stderr: make it fd 2, not pytest's capture buffer.
                sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
                code = run(argv, env=dict(os.environ), table=table)
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(argv, os.waitstatus_to_exitcode(status),
                                           out.read(), err.read())


class RedirectOpen:
    """openat(MAGIC) -> openat(target): the new path goes through the scratch page."""

    def __init__(self, target: str) -> None:
        self.target = target.encode() + b"\0"

    def __call__(self, call: SyscallCall) -> Action:
        if call.string_arg(1) == MAGIC:
            return Rewrite({1: self.target})
        return ALLOW


class DenyOpen:
    def __call__(self, call: SyscallCall) -> Action:
        if call.string_arg(1) == MAGIC:
            return Emulate(-errno.EACCES)
        return ALLOW


class CountingExit:
    """Replaces a failed openat's ENOENT by ENOTDIR at the exit stop (proves the exit stop ran)."""

    def __call__(self, call: SyscallCall) -> Action:
        if call.string_arg(1) == MAGIC:
            return ExitStop(lambda result: -errno.ENOTDIR if result == -errno.ENOENT else None)
        return ALLOW


def openat_table(handler) -> TrapTable:
    """Traps open (musl's choice) and openat; handlers see the path as argument 1."""
    opened = FS_PATH_SYSCALLS["open"]

    def shifted(call: SyscallCall) -> Action:
        # open(path, flags, mode) has the shape of openat(AT_FDCWD, path, flags, mode).
        view = SyscallCall(call.tid, call.tgid, call.nr, (0, *call.args[:5]), call.memory)
        action = handler(view)
        if isinstance(action, Rewrite):
            return Rewrite({i - 1: v for i, v in action.args.items()}, action.syscall,
                           action.on_exit)
        return action

    at = FS_PATH_SYSCALLS["openat"]
    entries = [None, TrapEntry("openat", handler, lambda c: describe(at, c)),
               TrapEntry("open", shifted, lambda c: describe(opened, c))]
    rules = [Rule(SYSCALL_NUMBERS["openat"], Trace(1)), Rule(SYSCALL_NUMBERS["open"], Trace(2))]
    return TrapTable(rules, entries)


@pytest.mark.parametrize("binary", ["probe-static", "probe-musl", "probe-dynamic", "probe-go"])
def test_rewrite_path_through_scratch_page(binary: str, tmp_path: Path) -> None:
    real = tmp_path / "real.txt"
    real.write_text("redirected content\n")
    out = run_traced(openat_table(RedirectOpen(str(real))),
                     [str(example_binary(binary)), "cat", MAGIC.decode(), MAGIC.decode()])
    assert out.returncode == 0, out.stderr
    assert out.stdout == b"redirected content\n" * 2


def test_rewrite_in_many_threads_and_after_fork(tmp_path: Path) -> None:
    """Every thread gets its own scratch slot; a forked child inherits the region."""
    real = tmp_path / "real.txt"
    real.write_text("x" * 10)
    table = openat_table(RedirectOpen(str(real)))
    threads = run_traced(table, [str(example_binary("probe-static")), "threads", "80", "50",
                                 MAGIC.decode()])
    assert threads.returncode == 0, threads.stderr
    forked = run_traced(table, [str(example_binary("probe-static")), "fork-exec",
                                str(example_binary("probe-go")), "cat", MAGIC.decode()])
    assert forked.returncode == 0, forked.stderr
    assert forked.stdout == b"x" * 10


@pytest.mark.parametrize("binary", ["probe-static", "probe-go"])
def test_emulated_result_reaches_program(binary: str) -> None:
    argv = [str(example_binary(binary)), "cat", MAGIC.decode()]
    out = run_traced(openat_table(DenyOpen()), argv)
    assert out.returncode != 0
    assert os.strerror(errno.EACCES).lower() in out.stderr.decode().lower()


def test_exit_stop_can_replace_result() -> None:
    out = run_traced(openat_table(CountingExit()),
                     [str(example_binary("probe-static")), "cat", MAGIC.decode()])
    assert os.strerror(errno.ENOTDIR) in out.stderr.decode()


class MoveFdHigh:
    """At openat's exit, dup3 the new fd to 900+ and close the original: the program sees 900+."""

    def __init__(self) -> None:
        self.next_fd = 900

    def __call__(self, call: SyscallCall) -> Action:
        if call.string_arg(1) != MAGIC:
            return ALLOW

        def at_exit(fd: int) -> Inject | None:
            if fd < 0:
                return None
            high = self.next_fd
            self.next_fd += 1
            dup3, close = SYSCALL_NUMBERS["dup3"], SYSCALL_NUMBERS["close"]
            return Inject(((dup3, (fd, high, 0)), (close, (fd,))),
                          lambda results: results[0])

        return Rewrite({1: b"/etc/hostname\0"}, on_exit=at_exit)


@pytest.mark.parametrize("binary", ["probe-static", "probe-go"])
def test_injected_syscalls_at_exit_move_fd(binary: str) -> None:
    out = run_traced(openat_table(MoveFdHigh()),
                     [str(example_binary(binary)), "cat", MAGIC.decode(), MAGIC.decode()])
    assert out.returncode == 0, out.stderr
    assert out.stdout == Path("/etc/hostname").read_bytes() * 2


class Broken:
    """A handler that raises: the program's call fails with the error's errno, nothing dies."""

    def __call__(self, call: SyscallCall) -> Action:
        if call.string_arg(1) == MAGIC:
            raise ConnectionResetError(errno.ECONNRESET, "agent gone")
        if call.string_arg(1) == MAGIC + b"2":
            raise RuntimeError("a bug")
        return ALLOW


def test_handler_exception_fails_the_call_not_the_program() -> None:
    probe = str(example_binary("probe-static"))
    out = run_traced(openat_table(Broken()), [probe, "cat", MAGIC.decode(), "/etc/hostname",
                                              MAGIC.decode() + "2", MAGIC.decode()])
    err = out.stderr.decode()
    assert os.strerror(errno.ECONNRESET) in err
    assert os.strerror(errno.EIO) in err
    assert out.stdout == Path("/etc/hostname").read_bytes()  # it went on after the failures
    # One supervisor line per kind of failure, not one per call.
    assert err.count("mirrord-trace: openat failed in the supervisor") == 2
