"""The guardian: under the notification engine, the program's parent, so that the program never
outlives the supervisor.

With ptrace, PTRACE_O_EXITKILL kills every traced process when the supervisor dies. The
notification engine holds no ptrace (so that a debugger can), and once the supervisor is gone a
notified call fails with ENOSYS for ever: the program would limp on, broken. So the supervisor
forks a guardian, and the guardian forks the program (which installs the filter, sends the
listener to the supervisor and execs). The guardian
- is a child subreaper (PR_SET_CHILD_SUBREAPER): whatever the program forks and orphans (a
  debugger's inferior, a daemon) is re-parented to it, so the program's whole tree stays below it;
- watches the supervisor through a pidfd: when the supervisor dies, however it dies (SIGKILL
  too), it kills that whole tree and exits;
- when the program ends, reports its wait status and the processes it left running to the
  supervisor, then waits for those (a daemonized server goes on serving) or, with
  --exit-with-program, ends them at once, as the ptrace engine does with its traced tasks.
The program itself also gets PR_SET_PDEATHSIG(SIGKILL), in case the guardian is killed.

The guardian is a fork of the supervisor that never execs (no second interpreter to start): it
only makes os/select calls, which take no lock another supervisor thread could have held at
fork time, and it leaves with os._exit.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mirrord_trace.program_start import exec_program, restore_program_signals
from seccomp import PreparedFilter

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc["prctl"]
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_prctl.restype = ctypes.c_int
_SYS_PIDFD_GETFD = 438
_syscall = _libc["syscall"]
_syscall.restype = ctypes.c_long


def _pidfd_getfd(pidfd: int, fd: int, flags: int) -> int:
    return int(_syscall(ctypes.c_long(_SYS_PIDFD_GETFD), ctypes.c_int(pidfd), ctypes.c_int(fd),
                        ctypes.c_uint(flags)))


@dataclass
class GuardedProgram:
    """The supervisor's view of a program started under a guardian."""

    pid: int  # the program (the guardian's child)
    guardian: int
    _status: int  # after "<program pid>\n" (read by spawn_guarded), "<wait status>\n"
    _errors: int  # the program's start failure ("stage:errno"), empty on success
    _listener_number: int  # the program writes its listener's fd number here...
    _listener_taken: int  # ...and waits for a byte here before it execs
    listener_failure: str = ""

    def take_listener(self) -> int:
        """Duplicate the program's listener fd (pidfd_getfd) and let the program exec; -1 if
        the program exec'd without one (its filter failed) or it could not be taken.

        Not SCM_RIGHTS, as the ptrace engine does: the program's sendmsg would run under its
        new filter, and with a target sendmsg is a notified call, which nobody can answer
        before the listener is here."""
        number = _read_all(self._listener_number)
        os.close(self._listener_number)
        listener = -1
        if number:
            try:
                pidfd = os.pidfd_open(self.pid)
                try:
                    listener = int(_pidfd_getfd(pidfd, int(number), 0))
                    if listener < 0:
                        code = ctypes.get_errno()
                        raise OSError(code, os.strerror(code))
                finally:
                    os.close(pidfd)
            except OSError as error:
                self.listener_failure = (
                    f"cannot take the seccomp listener from the program: pidfd_getfd: "
                    f"{error.strerror}; a container's seccomp profile may forbid it "
                    "(see docs/containers.md)"
                )
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                listener = -1
        with contextlib.suppress(OSError):
            os.write(self._listener_taken, b"g")
        os.close(self._listener_taken)
        return listener

    def wait(self, on_program_exit: Callable[[int, list[int]], object]) -> int:
        """The program's wait status, once it and what it left running have ended;
        `on_program_exit(status, leftovers)` is told when the program itself ends and left
        processes running. A guardian that died first (killed) takes the program with it
        (PR_SET_PDEATHSIG): reported as SIGKILL."""
        line = _read_line(self._status).split()
        if line and len(line) > 1:
            on_program_exit(int(line[0]), [int(pid) for pid in line[1:]])
        _read_all(self._status)  # end of file: the leftovers have ended too
        os.close(self._status)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.guardian, 0)
        if line:
            return int(line[0])
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        return signal.SIGKILL  # the status of death by SIGKILL

    def leftovers(self) -> list[int]:
        """The processes below the guardian still running (the program's tree)."""
        return [int(pid) for pid in _descendants(self.guardian)]

    def start_failure(self) -> str:
        failure = _read_all(self._errors).decode()
        os.close(self._errors)
        return failure


def spawn_guarded(
    path: str,
    argv: list[str],
    env: dict[str, str],
    prepared: PreparedFilter,
    original_mask: set[signal.Signals],
    exit_with_program: bool = False,
) -> GuardedProgram:
    """Fork the guardian, which forks the program; returns once the program's pid is known."""
    status_read, status_write = os.pipe2(os.O_CLOEXEC)
    error_read, error_write = os.pipe2(os.O_CLOEXEC)
    number_read, number_write = os.pipe2(os.O_CLOEXEC)
    taken_read, taken_write = os.pipe2(os.O_CLOEXEC)
    supervisor = os.pidfd_open(os.getpid())
    guardian = os.fork()
    if guardian == 0:
        try:
            for fd in (status_read, error_read, number_read, taken_write):
                os.close(fd)
            _guard(supervisor, status_write, error_write, (number_write, taken_read),
                   (path, argv, env, prepared, original_mask), exit_with_program)
        finally:
            os._exit(0)
    for fd in (supervisor, status_write, error_write, number_write, taken_read):
        os.close(fd)
    head = _read_line(status_read)
    if not head.strip():  # the guardian could not fork the program
        os.waitpid(guardian, 0)
        for fd in (status_read, number_read, taken_write):
            os.close(fd)
        failure = _read_all(error_read).decode() or "start:11"  # EAGAIN: fork failed
        os.close(error_read)
        stage, _, number = failure.partition(":")
        raise OSError(int(number), f"{stage}: {os.strerror(int(number))}")
    return GuardedProgram(int(head), guardian, status_read, error_read, number_read,
                          taken_write)


def _guard(
    supervisor: int,
    status: int,
    errors: int,
    handshake: tuple[int, int],
    start: tuple[str, list[str], dict[str, str], PreparedFilter, set[signal.Signals]],
    exit_with_program: bool,
) -> None:
    """The guardian's whole life (in the forked child)."""
    _prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    try:
        program = os.fork()
    except OSError as error:
        os.write(errors, f"start:{error.errno or 0}".encode())
        return
    if program == 0:
        os.close(supervisor)
        os.close(status)
        _exec_program(errors, handshake, *start)
    os.close(errors)
    for fd in handshake:
        os.close(fd)
    os.write(status, f"{program}\n".encode())
    watched = os.pidfd_open(program)
    poller = select.poll()
    poller.register(supervisor, select.POLLIN)
    poller.register(watched, select.POLLIN)
    while True:
        ready = dict(poller.poll())
        if supervisor in ready:
            _kill_tree()  # the supervisor is gone: nothing would answer the program's calls
            return
        if watched in ready:
            break
    _, wait_status = os.waitpid(program, 0)
    poller.unregister(watched)  # readable for ever now
    left = _descendants(os.getpid())
    os.write(status, " ".join([str(wait_status), *left]).encode() + b"\n")
    if exit_with_program:
        _kill_tree()
        return
    # Wait for what the program left running (orphans come to us: we are their subreaper).
    while _descendants(os.getpid()):
        if poller.poll(250):  # the supervisor is gone
            _kill_tree()
            return
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass


def _exec_program(
    errors: int,
    handshake: tuple[int, int],
    path: str,
    argv: Sequence[str],
    env: dict[str, str],
    prepared: PreparedFilter,
    original_mask: set[signal.Signals],
) -> None:
    """The program's process: as little Python as possible between fork and exec."""
    stage = "start"
    try:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        restore_program_signals(original_mask)
        stage = "seccomp"
        listener = prepared.install()
        # write and read are never trapped: the supervisor takes the listener meanwhile.
        number_write, taken_read = handshake
        os.write(number_write, str(listener).encode())
        os.close(number_write)
        if os.read(taken_read, 1) != b"g":
            os._exit(127)  # the supervisor is gone: nobody would answer the program's calls
        stage = "exec"
        exec_program(path, argv, env)  # closes the listener and the pipes (close-on-exec)
    except OSError as exc:
        os.write(errors, f"{stage}:{exc.errno or 0}".encode())
    finally:
        os._exit(127)


def _kill_tree() -> None:
    """SIGKILL every descendant and reap them; orphans re-parent to us, so repeat until none."""
    me = os.getpid()
    while True:
        found = _descendants(me)
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        try:
            os.waitpid(-1, 0)  # one at least is dying; the next round sees the rest
        except ChildProcessError:
            if not found:
                return


def _descendants(root: int) -> list[str]:
    found: list[str] = []
    pending = [root]
    while pending:
        pid = pending.pop()
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/children", "rb") as children:
                    listed = children.read().split()
            except OSError:
                continue
            for child in listed:
                found.append(child.decode())
                pending.append(int(child))
    return found


def _read_line(fd: int) -> bytes:
    """One line, read a byte at a time: what follows it is not ours to take yet."""
    line = b""
    while not line.endswith(b"\n"):
        chunk = os.read(fd, 1)
        if not chunk:
            break
        line += chunk
    return line


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks)
