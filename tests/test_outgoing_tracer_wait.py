"""The tracer primitives outgoing traffic relies on, on real programs:

- Wait: a thread is parked (in the kernel) until a future completes, while the tracer goes on
  serving every other thread and process; the program sees what `finish` returns.
- An exit callback that returns Emulate writes tracee memory and replaces the result (how the
  source address of a relayed UDP reply is rewritten).
"""

from __future__ import annotations

import errno
import os
import threading
import time
from concurrent.futures import Future

import pytest

from mirrord_trace.handlers.actions import ALLOW, Action, Emulate, ExitStop, Wait
from mirrord_trace.handlers.call import SyscallCall
from mirrord_trace.session import TrapTable
from mirrord_trace.syscall_table import SYSCALL_NUMBERS, SyscallShape, describe
from mirrord_trace.tracer.loop import TrapEntry
from seccomp import Rule, Trace
from tests.conftest import example_binary
from tests.test_tracer_actions import MAGIC, openat_table, run_traced

RELEASE = b"/mirrord-trace-test/release"
SAFETY_TIMEOUT = 20.0


def _resolved_later(delay: float, value: int) -> Future[int]:
    future: Future[int] = Future()
    timer = threading.Timer(delay, future.set_result, (value,))
    timer.daemon = True
    timer.start()
    return future


class ParkThenDeny:
    """openat(MAGIC) waits `delay` seconds for its answer: EACCES."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def __call__(self, call: SyscallCall) -> Action:
        if call.string_arg(1) != MAGIC:
            return ALLOW
        return Wait(_resolved_later(self.delay, -errno.EACCES), lambda f: f.result())


@pytest.mark.parametrize("binary", ["probe-static", "probe-musl", "probe-go"])
def test_parked_thread_gets_the_answer_when_it_arrives(binary: str) -> None:
    started = time.monotonic()
    out = run_traced(openat_table(ParkThenDeny(0.3)), [str(example_binary(binary)), "cat",
                                                       MAGIC.decode()])
    elapsed = time.monotonic() - started
    assert out.returncode == errno.EACCES, out.stderr
    assert os.strerror(errno.EACCES).lower() in out.stderr.decode().lower()
    assert elapsed >= 0.3


class ParkUntilReleased:
    """openat(MAGIC) parks until some other thread or process opens RELEASE."""

    def __init__(self) -> None:
        self.released: Future[int] = Future()
        safety = threading.Timer(SAFETY_TIMEOUT, self._give_up)
        safety.daemon = True
        safety.start()

    def _give_up(self) -> None:
        if not self.released.done():
            self.released.set_result(-errno.ETIMEDOUT)

    def __call__(self, call: SyscallCall) -> Action:
        path = call.string_arg(1)
        if path == RELEASE and not self.released.done():
            self.released.set_result(-errno.EACCES)
        if path != MAGIC:
            return ALLOW
        return Wait(self.released, lambda f: f.result())


def test_tracer_serves_other_processes_while_one_thread_is_parked() -> None:
    """If the tracer blocked on the parked call, RELEASE would never be seen (ETIMEDOUT)."""
    probe = str(example_binary("probe-static"))
    script = (f"{probe} cat {MAGIC.decode()} & sleep 0.2; {probe} cat {RELEASE.decode()}; "
              "wait $!")
    out = run_traced(openat_table(ParkUntilReleased()),
                     [str(example_binary("busybox")), "sh", "-c", script])
    assert out.returncode == errno.EACCES, out.stderr
    assert os.strerror(errno.ETIMEDOUT).lower() not in out.stderr.decode().lower()


@pytest.mark.parametrize("binary", ["probe-static", "probe-go"])
def test_a_signal_of_the_program_during_the_wait_changes_nothing(binary: str) -> None:
    """SIGWINCH (ignored) interrupts the parked sleep early; the answer still arrives."""
    probe = str(example_binary(binary))
    script = (f"{probe} cat {MAGIC.decode()} & pid=$!; sleep 0.1; kill -WINCH $pid; "
              "wait $pid")
    started = time.monotonic()
    out = run_traced(openat_table(ParkThenDeny(0.6)),
                     [str(example_binary("busybox")), "sh", "-c", script])
    assert out.returncode == errno.EACCES, out.stderr
    assert time.monotonic() - started >= 0.6


def test_a_parked_program_can_still_be_killed() -> None:
    probe = str(example_binary("probe-static"))
    script = f"{probe} cat {MAGIC.decode()} & pid=$!; sleep 0.1; kill -TERM $pid; wait $pid"
    started = time.monotonic()
    out = run_traced(openat_table(ParkThenDeny(5.0)),
                     [str(example_binary("busybox")), "sh", "-c", script])
    assert out.returncode == 128 + 15
    assert time.monotonic() - started < 4.0


def _open_and_stat_table(handler) -> TrapTable:
    """openat and newfstatat both carry the path in argument 1."""
    shapes = [SyscallShape("openat", ("dirfd", "path", "oflags", "mode")),
              SyscallShape("newfstatat", ("dirfd", "path", "ptr", "atflags"))]
    entries: list[TrapEntry | None] = [None]
    rules = []
    for tag, shape in enumerate(shapes, start=1):
        entries.append(TrapEntry(shape.name, handler, lambda c, s=shape: describe(s, c)))
        rules.append(Rule(shape.nr, Trace(tag)))
    return TrapTable(rules, entries)


def test_parked_goroutines_wait_together_not_one_by_one() -> None:
    started = time.monotonic()
    out = run_traced(_open_and_stat_table(ParkThenDeny(0.5)),
                     [str(example_binary("probe-go")), "goroutines", "8", "1", MAGIC.decode()])
    assert out.returncode == errno.EACCES, out.stderr
    # Eight 0.5 s waits one after the other would take 4 s.
    assert time.monotonic() - started < 3.0


READLINK = SyscallShape("readlink", ("path", "ptr", "int"))
READLINKAT = SyscallShape("readlinkat", ("dirfd", "path", "ptr", "int"))
ANSWER = b"written-at-exit"


def _readlink_table() -> TrapTable:
    def handler(path_index: int):
        def handle(call: SyscallCall) -> Action:
            if call.string_arg(path_index) != MAGIC:
                return ALLOW
            buffer = call.args[path_index + 1]
            # The real readlink fails (ENOENT); the exit stop writes an answer instead.
            return ExitStop(lambda result: Emulate(len(ANSWER), ((buffer, ANSWER),)))

        return handle

    entries = [None,
               TrapEntry("readlink", handler(0), lambda c: describe(READLINK, c)),
               TrapEntry("readlinkat", handler(1), lambda c: describe(READLINKAT, c))]
    rules = [Rule(SYSCALL_NUMBERS["readlink"], Trace(1)),
             Rule(SYSCALL_NUMBERS["readlinkat"], Trace(2))]
    return TrapTable(rules, entries)


@pytest.mark.parametrize("binary", ["probe-static", "probe-go"])
def test_exit_callback_emulate_writes_memory_and_result(binary: str) -> None:
    out = run_traced(_readlink_table(), [str(example_binary(binary)), "readlink", MAGIC.decode()])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ANSWER
