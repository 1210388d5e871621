"""Run a program under the seccomp filter and an engine; pass its exit status through.

ptrace engine: fork -> the child waits until the parent has seized it (options set before the
filter exists) -> the child installs the filter and execs -> the parent runs the tracer loop
until the program ends.
notification engine (debuggers, --engine notify): fork a guardian (mirrord_trace.guardian),
which forks the program -> the program installs a filter that notifies every trap and execs ->
the notification thread serves it while the parent waits for the guardian's report.
Either way, termination signals sent to the supervisor are forwarded to the program.
"""

from __future__ import annotations

import _socket
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, TextIO

from mirrord_trace.program_start import exec_program, restore_program_signals
from mirrord_trace.session import SessionContext, TrapTable, build_trap_table
from mirrord_trace.signal_mask import FORWARDED_SIGNALS, helper_threads_spared
from mirrord_trace.tracer import ptrace_api as pt
from mirrord_trace.tracer.dispatch import HandlerFailures
from mirrord_trace.tracer.engines import (
    Engine,
    chosen_engine,
    is_debugger,
    with_debugger_hint,
)
from mirrord_trace.tracer.loop import Tracer
from mirrord_trace.tracer.notifications import NotificationServer, listener_over
from seccomp import PreparedFilter, build_filter, prepare_filter
from seccomp.install import (
    SECCOMP_FILTER_FLAG_NEW_LISTENER,
    SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
)

if TYPE_CHECKING:
    from mirrord_trace.config import Config

SI_KERNEL = 0x80  # si_code of signals the terminal sent to the whole foreground group
LISTENER_FLAGS = SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV


class ProgramNotFound(Exception):
    """The program is missing or not executable; nothing was started."""


class TracingUnavailable(Exception):
    """The kernel would not let the supervisor trace the program; nothing was started."""


def resolve_program(name: str, env: Mapping[str, str]) -> str:
    if "/" in name:
        if not os.path.exists(name):
            raise ProgramNotFound(f"program not found: {name}")
        if os.path.isdir(name) or not os.access(name, os.X_OK):
            raise ProgramNotFound(f"program is not executable: {name}")
        return name
    import shutil  # only for a bare name: it imports bz2 and lzma (~3 ms of start-up)

    found = shutil.which(name, path=env.get("PATH", os.defpath))
    if found is None:
        raise ProgramNotFound(f"program not found in PATH: {name}")
    return found


def exit_code(status: int) -> int:
    """waitpid status -> shell-style exit code (128+N for death by signal N)."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    config: Config | None = None,
    agent: object | None = None,
    trace: TextIO | None = None,
    table: TrapTable | None = None,
    on_start: Callable[[], object] | None = None,
    exit_with_program: bool = False,
    engine: str | None = None,
) -> int:
    """Run argv traced; returns the exit code a shell would report (the program's).

    `engine` is "ptrace" or "notify"; None picks notify for a debugger, else ptrace.

    `on_start` runs once the program exists and the forwarded signals are routed to it.
    Processes the program leaves running when it exits are waited for (a daemonized server
    goes on serving), or ended at once with `exit_with_program`.
    """
    if not argv:
        raise ProgramNotFound("no program given")
    path = resolve_program(argv[0], env)
    chosen = chosen_engine(engine, path)
    context: SessionContext | None = None
    if table is None:
        from mirrord_trace.config import Config

        context = SessionContext(
            config if config is not None else Config(),
            agent=agent,
            explain=trace is not None,
            supervisor_pid=os.getpid(),
            program=os.path.abspath(path),
        )
        with helper_threads_spared():  # families may start threads (relays, DNS)
            table = build_trap_table(context)
    try:
        if chosen is Engine.NOTIFY:
            return _run_notified(path, argv, env, table, trace, on_start, exit_with_program)
        return _run_traced(
            path, argv, env, with_debugger_hint(table), trace, on_start, exit_with_program
        )
    finally:
        if context is not None:
            context.end()


def _run_traced(
    path: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    table: TrapTable,
    trace: TextIO | None,
    on_start: Callable[[], object] | None = None,
    exit_with_program: bool = False,
) -> int:
    flags = LISTENER_FLAGS if table.notified else 0
    prepared = prepare_filter(build_filter(table.rules), flags=flags)
    original_mask = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
    try:
        pid, exec_errors, listener_channel = _spawn_traced(
            path, list(argv), dict(env), prepared, original_mask
        )
        tracers: list[Tracer] = []
        _start_signal_forwarder(pid, lambda: _leftover_pids(tracers))
        if on_start is not None:
            on_start()
        failures = HandlerFailures()
        tracer = Tracer(
            pid, table.dispatch, trace, failures, frozenset(table.notified),
            on_program_exit=partial(_on_program_exit, exit_with_program),
        )  # fmt: skip
        tracers.append(tracer)
        notifications = None
        if listener_channel is not None:
            # Started after the signal mask is set: the thread must not take forwarded signals.
            notifications = NotificationServer(
                partial(listener_over, listener_channel), table.notified, tracer.tasks, failures
            )
            notifications.start()
        status = tracer.run()
        if notifications is not None:
            notifications.stop()
            listener_channel.close()
        failure = os.read(exec_errors, 64).decode()
        os.close(exec_errors)
        _raise_start_failure(failure, argv[0])
        return exit_code(status)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, original_mask)


def _raise_start_failure(failure: str, program: str) -> None:
    """The child's report of a failed start ("stage:errno"), as the matching error."""
    if not failure:
        return
    stage, _, number = failure.partition(":")
    reason = os.strerror(int(number))
    if stage == "seccomp":
        raise TracingUnavailable(
            f"cannot install the seccomp filter: {reason}; the kernel or a container's "
            "seccomp profile forbids seccomp(2) or prctl(2) (see docs/containers.md)"
        )
    raise ProgramNotFound(f"cannot execute {program}: {reason}")


def _run_notified(
    path: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    table: TrapTable,
    trace: TextIO | None,
    on_start: Callable[[], object] | None = None,
    exit_with_program: bool = False,
) -> int:
    """The notification engine: no ptrace; the guardian holds the program (see module doc)."""
    from mirrord_trace.guardian import spawn_guarded
    from mirrord_trace.tracer.engines import notified_everywhere

    rules, entries = notified_everywhere(table)
    prepared = prepare_filter(build_filter(rules), flags=LISTENER_FLAGS)
    original_mask = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
    try:
        try:
            program = spawn_guarded(
                path, list(argv), dict(env), prepared, original_mask, exit_with_program
            )
        except OSError as error:
            _raise_start_failure(f"start:{error.errno or 0}", argv[0])
            raise
        _start_signal_forwarder(program.pid, program.leftovers)
        if on_start is not None:
            on_start()
        # A debugger's own calls run unchanged: only what it starts sees the target.
        skipped = frozenset({program.pid}) if is_debugger(path) else frozenset()
        notifications = NotificationServer(
            program.take_listener, entries, {}, HandlerFailures(),
            every_trap=True, skipped=skipped, trace=trace,
        )  # fmt: skip
        notifications.start()
        status = program.wait(partial(_on_program_exit, exit_with_program))
        notifications.stop()
        _raise_start_failure(program.start_failure(), argv[0])
        if program.listener_failure:
            raise TracingUnavailable(program.listener_failure)
        return exit_code(status)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, original_mask)


def _spawn_traced(
    path: str,
    argv: list[str],
    env: dict[str, str],
    prepared: PreparedFilter,
    original_mask: set[signal.Signals],
) -> tuple[int, int, _socket.socket | None]:
    """Fork the program's process, seize it and let it exec.

    Returns the pid, the pipe that reports a failed start, and, when the filter asks for a
    listener, the socket it will arrive on (for the notification thread to receive)."""
    go_read, go_write = os.pipe()
    error_read, error_write = os.pipe2(os.O_CLOEXEC)
    # The listener travels as SCM_RIGHTS: the message holds its own reference, so the child
    # can exec (closing its close-on-exec copy) before anyone reads it. The child sends it
    # under the filter, so the send may stop for the tracer: whoever receives must not hold
    # up the tracer loop. _socket, not socket: its imports cost milliseconds of start-up.
    channel = None
    if prepared.flags & SECCOMP_FILTER_FLAG_NEW_LISTENER:
        channel = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:  # the child: as little Python as possible between fork and exec
        stage = "start"
        try:
            os.close(go_write)
            os.close(error_read)
            # Wait until the parent has seized us. End of file means it died first: the
            # program must not run untraced (every trapped call would fail with ENOSYS).
            if os.read(go_read, 1) != b"g":
                os._exit(127)
            os.close(go_read)
            restore_program_signals(original_mask)
            stage = "seccomp"
            listener = prepared.install()
            if channel is not None:
                rights = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, listener.to_bytes(4, "little"))]
                channel[1].sendmsg([b"l"], rights)
            stage = "exec"
            exec_program(path, argv, env)  # closes the listener and the channel (cloexec)
        except OSError as exc:
            os.write(error_write, f"{stage}:{exc.errno or 0}".encode())
        finally:
            os._exit(127)
    os.close(go_read)
    os.close(error_write)
    if channel is not None:
        channel[1].close()
    try:
        pt.seize(pid)
    except OSError as exc:
        os.close(go_write)
        if channel is not None:
            channel[0].close()
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(error_read)
        raise TracingUnavailable(
            f"cannot trace the program: ptrace refused ({os.strerror(exc.errno or 0)}); "
            "is mirrord-trace itself running under a debugger or strace, or does "
            "kernel.yama.ptrace_scope forbid tracing?"
        ) from exc
    os.write(go_write, b"g")
    os.close(go_write)
    return pid, error_read, None if channel is None else channel[0]


def _on_program_exit(exit_with_program: bool, status: int, leftovers: list[int]) -> bool:
    """The program ended and left processes running: say so, and whether we wait for them."""
    names = ", ".join(f"{pid} ({_command_name(pid)})" for pid in leftovers)
    ended = f"mirrord-trace: the program exited ({exit_code(status)})"
    if exit_with_program:
        sys.stderr.write(f"{ended}; ending the processes it left running: {names}\n")
        return False
    sys.stderr.write(
        f"{ended}; waiting for the processes it left running: {names} (Ctrl-C or SIGTERM "
        "ends them; --exit-with-program ends them at once)\n"
    )
    sys.stderr.flush()
    return True


def _command_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as comm:
            return comm.read().strip()
    except OSError:
        return "?"


def _leftover_pids(tracers: list[Tracer]) -> list[int]:
    """The traced processes still running (read from the tracer thread's table)."""
    if not tracers:
        return []
    for _ in range(10):
        try:
            return sorted({task.tgid for task in list(tracers[0].tasks.values())})
        except RuntimeError:  # the table changed while we copied it: try again
            continue
    return []


def _start_signal_forwarder(pid: int, leftovers: Callable[[], list[int]]) -> None:
    """Forward the termination signals to the program; once it has exited, to what it left."""

    def forward() -> None:
        main_gone = False
        while True:
            info = signal.sigwaitinfo(FORWARDED_SIGNALS)
            if info.si_code == SI_KERNEL and not main_gone:
                continue  # the terminal signalled the program's process group directly
            if not main_gone:
                try:
                    os.kill(pid, info.si_signo)
                    continue
                except ProcessLookupError:
                    main_gone = True
            # Daemons left running are in sessions of their own: a Ctrl-C never reaches them.
            for leftover in leftovers():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(leftover, info.si_signo)

    threading.Thread(target=forward, name="signal-forwarder", daemon=True).start()
