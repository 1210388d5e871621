"""The tracer: the one waitpid loop that receives every ptrace stop and applies handler actions.

This is the only module (with its siblings in mirrord_trace.tracer) that touches ptrace,
registers and tracee memory. It runs in the thread that seized the program; ptrace requests
must come from that thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, TextIO

from mirrord_trace.handlers.actions import (
    Action,
    Allow,
    Emulate,
    ExitStop,
    Inject,
    InjectArgs,
    OpenInstead,
    Rewrite,
    Wait,
)
from mirrord_trace.handlers.call import SyscallCall
from mirrord_trace.tracer import ptrace_api as pt
from mirrord_trace.tracer.dispatch import HandlerFailures, TrapEntry
from mirrord_trace.tracer.memory import TraceeMemoryError
from mirrord_trace.tracer.restarts import could_block_natively
from mirrord_trace.tracer.tasks import REGION_SIZE, SLOT_SIZE, AddressSpace, Task

_MASK64 = (1 << 64) - 1
_SKIP_SYSCALL = _MASK64  # orig_rax = -1: the kernel skips the syscall, rax is the result
_SYSCALL_STOP = signal.SIGTRAP | 0x80
_SECCOMP_STOP_STATUS = 0x7F | (signal.SIGTRAP << 8) | (pt.PTRACE_EVENT_SECCOMP << 16)
_GROUP_STOP_SIGNALS = frozenset({signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU})
_CLONE_VM = 0x100
_SYS_CLONE = 56
_SYS_CLONE3 = 435
_SYS_MMAP = 9
_SYSCALL_INFO_EXIT = 2  # PTRACE_SYSCALL_INFO_EXIT
_ARG_REGISTERS = ("rdi", "rsi", "rdx", "r10", "r8", "r9")

# A parked thread (Wait) sleeps in ppoll(NULL, 0, NULL, &mask, 8): no fds, no timeout, and the
# thread's own signal mask minus the wake-up signal, so the wake-up gets through even when the
# program blocks it, while the program's other signals stay blocked as the program wants.
# The tracer completes the call at the wake-up's signal-delivery stop (setting the result there
# also stops the kernel from restarting the ppoll), so parking costs no exit stop. SIGURG is
# ignored by default and Go tolerates spurious ones, so a wake-up that slips past the tracer
# (merged with one of the program's own) does no harm.
_SYS_PPOLL = 271
_SYS_TGKILL = 234
_ERESTARTNOHAND = -514
_ERESTARTSYS = -512
_ERESTARTNOINTR = -513
WAKE_SIGNAL = signal.SIGURG
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _wake(tgid: int, tid: int) -> None:
    """Interrupt a parked thread (any thread may call this; a vanished task is ignored)."""
    _libc.syscall(_SYS_TGKILL, tgid, tid, WAKE_SIGNAL)


class TaskGone(Exception):
    """The task vanished (killed, or exited) while the tracer was working on it."""


def signed(value: int) -> int:
    return value - (1 << 64) if value & (1 << 63) else value


class Tracer:
    def __init__(
        self,
        main_pid: int,
        dispatch: Sequence[TrapEntry | None],
        trace: TextIO | None = None,
        failures: HandlerFailures | None = None,
        notified: frozenset[int] = frozenset(),
        on_program_exit: Callable[[int, list[int]], bool] | None = None,
    ) -> None:
        self.main_pid = main_pid
        # Called once when the main program ends while processes it started still run, with
        # its status and their pids: True keeps tracing them until they end too (a daemonized
        # server goes on serving), False kills them. None kills them, as EXITKILL would.
        self.on_program_exit = on_program_exit
        self._waiting_for_leftovers = False
        self.dispatch = dispatch
        self.trace = trace
        self.tasks: dict[int, Task] = {}
        self._registers = pt.RegisterBlock()
        self._message = pt.EventMessage()
        self._syscall_info = pt.SyscallInfo()
        self._main_status: int | None = None
        self._failures = failures or HandlerFailures()
        self.notified = notified  # syscall numbers decided through seccomp notifications
        self._add_task(main_pid, main_pid, AddressSpace(main_pid))

    # ---- the loop -------------------------------------------------------------------------

    def run(self) -> int:
        """Trace until the main program ends; returns its waitpid status."""
        waitpid = os.waitpid
        wall = pt.WALL
        tasks = self.tasks
        on_seccomp = self._on_seccomp
        while self._main_status is None or self._waiting_for_leftovers:
            if self._main_status is not None and not self._forget_vanished():
                break  # what the program left running has gone, some of it unreported
            try:
                tid, status = waitpid(-1, wall)
            except ChildProcessError:
                break
            if status == _SECCOMP_STOP_STATUS:  # the hot path: one int compare, no decoding
                task = tasks.get(tid)
                try:  # noqa: SIM105 - a context manager per stop costs time on the hot path
                    on_seccomp(task or self._adopt(tid), tid)
                except (pt.PtraceFailed, TaskGone, ProcessLookupError):
                    pass  # killed meanwhile (SIGKILL needs no tracer); its exit follows
            elif status & 0xFF == 0x7F:  # stopped
                try:  # noqa: SIM105
                    self._on_stop(tid, status)
                except (pt.PtraceFailed, TaskGone, ProcessLookupError):
                    pass
            else:
                self._on_termination(tid, status)
        self._end_remaining()
        return self._main_status if self._main_status is not None else 0

    def _on_termination(self, tid: int, status: int) -> None:
        task = self.tasks.pop(tid, None)
        if task is not None:
            task.space.release(tid)
        if tid == self.main_pid:
            self._main_status = status
            self._forget_vanished()
            leftovers = sorted({task.tgid for task in self.tasks.values()})
            if leftovers and self.on_program_exit is not None:
                self._waiting_for_leftovers = self.on_program_exit(status, leftovers)
        if self._waiting_for_leftovers and not self.tasks:
            self._waiting_for_leftovers = False

    def _forget_vanished(self) -> bool:
        """Drop the tasks that are gone without an exit event (a thread replaced by its
        process's exec, the program's own threads once its leader is reported); -> whether any
        task is left. Only after the program ended: waitpid would otherwise wait on for them
        (or for the local agent, also our child) with nothing left to trace."""
        for tid, task in list(self.tasks.items()):
            if task.tgid == self.main_pid or not os.path.exists(f"/proc/{tid}"):
                self.tasks.pop(tid, None)
                task.space.release(tid)
        return bool(self.tasks)

    def _end_remaining(self) -> None:
        """The program has ended: kill what it left behind, as EXITKILL would, and reap it."""
        for tgid in {task.tgid for task in self.tasks.values()}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(tgid, signal.SIGKILL)
        while self.tasks:
            try:
                tid, _ = os.waitpid(-1, pt.WALL)
            except ChildProcessError:
                break
            self.tasks.pop(tid, None)

    # ---- stops ----------------------------------------------------------------------------

    def _on_stop(self, tid: int, status: int) -> None:
        sig = (status >> 8) & 0xFF
        event = status >> 16
        if event == pt.PTRACE_EVENT_SECCOMP:
            self._on_seccomp(self.tasks.get(tid) or self._adopt(tid), tid)
        elif sig == _SYSCALL_STOP:
            self._on_syscall_exit(self.tasks.get(tid) or self._adopt(tid))
        elif event == 0:
            task = self.tasks.get(tid) or self._adopt(tid)
            if task.parked is not None:
                self._on_parked_signal(task)
            elif self.notified:
                self._restart_withdrawn_notification(task)
            if sig == WAKE_SIGNAL and task.wakes_pending:
                task.wakes_pending -= 1  # the tracer's own wake-up of a parked thread
                pt.cont(tid)
            else:
                # Signal-delivery stop: the program's own signal, delivered unchanged.
                pt.cont(tid, sig)
        elif event == pt.PTRACE_EVENT_STOP:
            self.tasks.get(tid) or self._adopt(tid)
            if sig in _GROUP_STOP_SIGNALS:
                pt.listen(tid)  # stay stopped (job control) until SIGCONT
            else:
                pt.cont(tid)  # a new task's first stop, or the end of a group-stop
        elif event in (pt.PTRACE_EVENT_FORK, pt.PTRACE_EVENT_VFORK, pt.PTRACE_EVENT_CLONE):
            self._on_new_task(self.tasks.get(tid) or self._adopt(tid), event)
            pt.cont(tid)
        elif event == pt.PTRACE_EVENT_EXEC:
            self._on_exec(tid)
            pt.cont(tid)
        else:
            pt.cont(tid)

    def _adopt(self, tid: int) -> Task:
        """A tid seen before its parent's clone event (or never announced): learn its tgid."""
        tgid = read_tgid(tid)
        sibling = next((t for t in self.tasks.values() if t.tgid == tgid), None)
        space = sibling.space if sibling is not None else AddressSpace(tgid)
        task = self._add_task(tid, tgid, space)
        task.adopted = True
        return task

    def _add_task(self, tid: int, tgid: int, space: AddressSpace) -> Task:
        task = Task(tid, tgid, space)
        self.tasks[tid] = task
        return task

    def _on_new_task(self, parent: Task, event: int) -> None:
        child = self._message.read(parent.tid)
        if event == pt.PTRACE_EVENT_FORK:
            shares_memory = False
        elif event == pt.PTRACE_EVENT_VFORK:
            shares_memory = True
        else:
            shares_memory = self._clone_shares_memory(parent)
        known = self.tasks.get(child)
        tgid = known.tgid if known is not None else read_tgid(child)
        space = parent.space if shares_memory else parent.space.copy_for_fork(child)
        if known is None:
            self._add_task(child, tgid, space)
        elif known.adopted:
            # The child ran before this event reached us; if it exec'd meanwhile it is no longer
            # adopted and keeps its own new space (a vfork child's exec is the usual case).
            known.space = space
            known.adopted = False

    def _clone_shares_memory(self, parent: Task) -> bool:
        regs = self._registers.load(parent.tid)
        if regs.orig_rax == _SYS_CLONE:
            return bool(regs.rdi & _CLONE_VM)
        if regs.orig_rax == _SYS_CLONE3:
            flags = parent.space.memory(parent.tid).read(regs.rdi, 8)
            return bool(int.from_bytes(flags, "little") & _CLONE_VM)
        return True  # be conservative: a shared space only costs scratch slots

    def _on_exec(self, tid: int) -> None:
        former = self._message.read(tid)
        old = self.tasks.pop(former, None) or self.tasks.get(tid)
        tgid = old.tgid if old is not None else tid
        # Every other thread of the group is gone; the exec'ing one now has the group's id.
        for other in [t for t in self.tasks.values() if t.tgid == tgid]:
            del self.tasks[other.tid]
        if old is not None and not any(t.space is old.space for t in self.tasks.values()):
            old.space.close()
        self._add_task(tid, tgid, AddressSpace(tid))

    # ---- syscalls -------------------------------------------------------------------------

    def _on_seccomp(self, task: Task, tid: int) -> None:
        if task.replay is not None:
            action, task.replay = task.replay, None
            self._apply(task, self._registers.load(tid), action)
            return
        info = self._syscall_info.read(tid)
        tag = info[11]
        entry = self.dispatch[tag] if tag < len(self.dispatch) else None
        if entry is None:
            pt.cont(tid)
            return
        call = SyscallCall(tid, task.tgid, info[4], info[5:11], task.space.memory(tid))
        action = self._failures.decide(entry, call)
        if type(action) is OpenInstead:
            action = action.rewrite  # this engine can rewrite the path argument in place
        if self.trace is not None:
            action = self._traced(task, entry, call, action)
        if type(action) is Allow:  # the common case needs no registers
            pt.cont(tid)
        else:
            self._apply(task, self._registers.load(tid), action)

    def _apply(self, task: Task, regs: pt.Registers, action: Action) -> None:
        tid = task.tid
        if type(action) is Allow:
            pt.cont(tid)
        elif type(action) is Emulate:
            task.space.memory(tid).write_all(action.writes)
            regs.orig_rax = _SKIP_SYSCALL
            regs.rax = action.result & _MASK64
            self._registers.store(tid)
            pt.cont(tid)
        elif type(action) is Rewrite:
            self._rewrite(task, regs, action)
        elif type(action) is ExitStop:
            task.on_exit = action.on_exit
            pt.cont_to_exit(tid)
        elif type(action) is Wait:
            self._park(task, regs, action)
        else:
            raise TypeError(f"not an action: {action!r}")

    def _park(self, task: Task, regs: pt.Registers, action: Wait) -> None:
        """Swap the syscall for an interruptible sleep until the future completes (see Wait)."""
        future = action.future
        if future.done():
            result = action.finish(future)
            self._apply(task, regs, result if type(result) is Emulate else Emulate(result))
            return
        tid = task.tid
        slot = task.space.slot(tid)
        if slot is None:
            task.replay = action  # the sleep's signal mask needs the scratch slot: map it first
            self._map_scratch_region(task, regs)
            return
        # The mask sits at the slot's end, clear of arguments a signal handler's own rewritten
        # syscalls may put at its start while this one waits.
        mask_address = slot + SLOT_SIZE - 8
        mask = _blocked_signals(tid) & ~(1 << (WAKE_SIGNAL - 1))
        task.space.memory(tid).write(mask_address, mask.to_bytes(8, "little"))
        regs.orig_rax = _SYS_PPOLL
        regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8 = 0, 0, 0, mask_address, 8
        self._registers.store(tid)
        task.parked = action
        task.wakes_pending += 1
        tgid = task.tgid
        future.add_done_callback(lambda _: _wake(tgid, tid))
        pt.cont(tid)

    def _on_parked_signal(self, task: Task) -> None:
        """A signal interrupted a parked thread's sleep: complete the call if its answer is
        there; otherwise arrange for the sleep to resume once the signal has been dealt with."""
        parked = task.parked
        assert parked is not None
        regs = self._registers.load(task.tid)
        if parked.future.done():
            task.parked = None
            result = parked.finish(parked.future)
            if type(result) is Emulate:
                result = self._written(task, result)
            regs = self._registers.load(task.tid)  # finish may have taken a while: reload
            regs.rax = result & _MASK64
            self._registers.store(task.tid)
        elif signed(regs.rax) == _ERESTARTNOHAND:
            # Back onto the `syscall` instruction with the ppoll number: after a handler (or
            # none) the thread sleeps again, and the program never sees EINTR.
            regs.rax = regs.orig_rax
            regs.rip -= 2
            self._registers.store(task.tid)

    def _restart_withdrawn_notification(self, task: Task) -> None:
        """A signal withdrew a notified call before it was answered: restart the call after
        the signal unless it could have been interrupted natively (see tracer.restarts)."""
        regs = self._registers.load(task.tid)
        if signed(regs.rax) != _ERESTARTSYS or regs.orig_rax not in self.notified:
            return
        args = (regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9)
        call = SyscallCall(task.tid, task.tgid, regs.orig_rax, args, task.space.memory(task.tid))
        if not could_block_natively(call):
            regs.rax = _ERESTARTNOINTR & _MASK64  # restarted whatever the handler's SA_RESTART
            self._registers.store(task.tid)

    def _rewrite(self, task: Task, regs: pt.Registers, action: Rewrite) -> None:
        tid = task.tid
        buffers = [v for v in action.args.values() if isinstance(v, bytes)]
        slot = None
        if buffers:
            slot = task.space.slot(tid)
            if slot is None:
                # No scratch yet: map a region now and replay this decision when the same
                # syscall traps again after the rewind.
                task.replay = action
                self._map_scratch_region(task, regs)
                return
            if sum(_aligned(len(b)) for b in buffers) > SLOT_SIZE:
                raise ValueError("rewritten arguments exceed a scratch slot")
        cursor = slot or 0
        memory = task.space.memory(tid)
        for index, value in action.args.items():
            if isinstance(value, bytes):
                memory.write(cursor, value)
                setattr(regs, _ARG_REGISTERS[index], cursor)
                cursor += _aligned(len(value))
            else:
                setattr(regs, _ARG_REGISTERS[index], value & _MASK64)
        if action.syscall is not None:
            regs.orig_rax = action.syscall
        self._registers.store(tid)
        if action.on_exit is not None:
            task.on_exit = action.on_exit
            pt.cont_to_exit(tid)
        else:
            pt.cont(tid)

    def _map_scratch_region(self, task: Task, regs: pt.Registers) -> None:
        """Inject mmap in place of the trapped syscall, then rewind so that syscall re-runs."""
        tid = task.tid
        saved = self._registers.snapshot()
        nr, rip = regs.orig_rax, regs.rip
        regs.orig_rax = _SYS_MMAP
        regs.rdi, regs.rsi, regs.rdx = 0, REGION_SIZE, 0x3  # PROT_READ | PROT_WRITE
        regs.r10, regs.r8, regs.r9 = 0x22, _MASK64, 0  # MAP_PRIVATE | MAP_ANONYMOUS, fd -1
        self._registers.store(tid)
        pt.cont_to_exit(tid)
        self._wait_for_syscall_exit(tid)
        result = signed(self._registers.load(tid).rax)
        if -4096 < result < 0:
            task.replay = None
            raise OSError(-result, "mmap of the scratch region failed in the tracee")
        task.space.add_region(result)
        regs = self._registers.restore(saved)
        regs.rip = rip - 2  # back onto the `syscall` instruction
        regs.rax = nr
        self._registers.store(tid)
        pt.cont(tid)

    def _wait_for_syscall_exit(self, tid: int) -> None:
        """Wait for an injected syscall's exit stop, passing over its entry and seccomp stops."""
        while True:
            _, status = os.waitpid(tid, pt.WALL)
            if status & 0xFF != 0x7F:
                self._on_termination(tid, status)
                raise TaskGone(tid)
            sig = (status >> 8) & 0xFF
            if sig == _SYSCALL_STOP and self._syscall_info.read(tid)[0] == _SYSCALL_INFO_EXIT:
                return
            pt.cont_to_exit(tid)

    def _on_syscall_exit(self, task: Task) -> None:
        tid = task.tid
        callback, task.on_exit = task.on_exit, None
        if callback is not None:
            regs = self._registers.load(tid)
            replacement = callback(signed(regs.rax))
            if type(replacement) is Inject:
                replacement = replacement.result(self._inject(task, regs, replacement.calls))
                regs = self._registers.load(tid)
            if type(replacement) is Emulate:
                replacement = self._written(task, replacement)
            if replacement is not None:
                regs.rax = replacement & _MASK64
                self._registers.store(tid)
        pt.cont(tid)

    def _written(self, task: Task, emulate: Emulate) -> int:
        """Apply an answer that arrived after the call ran or slept; its result. A write to the
        program's own bad pointer is its business: the result stands."""
        with contextlib.suppress(TraceeMemoryError):
            task.space.memory(task.tid).write_all(emulate.writes)
        return emulate.result

    def _inject(
        self, task: Task, regs: pt.Registers, calls: tuple[tuple[int, InjectArgs], ...]
    ) -> list[int]:
        """Run syscalls in a task stopped at a syscall exit; leaves its registers as they were."""
        tid = task.tid
        saved = self._registers.snapshot()
        rip = regs.rip
        results: list[int] = []
        for nr, given in calls:
            args = given(results) if callable(given) else given
            regs = self._registers.restore(saved)
            regs.rax = nr
            regs.orig_rax = nr
            regs.rip = rip - 2  # re-execute the `syscall` instruction
            for register, value in zip(_ARG_REGISTERS, args, strict=False):
                setattr(regs, register, value & _MASK64)
            self._registers.store(tid)
            pt.cont_to_exit(tid)
            self._wait_for_syscall_exit(tid)
            results.append(signed(self._registers.load(tid).rax))
        self._registers.restore(saved)
        self._registers.store(tid)
        return results

    # ---- --trace --------------------------------------------------------------------------

    def _traced(self, task: Task, entry: TrapEntry, call: SyscallCall, action: Action) -> Action:
        """Wrap an action so that one line per syscall reaches the trace with its result."""
        assert self.trace is not None
        trace = self.trace
        try:
            described = entry.describe(call)
        except TraceeMemoryError:
            described = f"{entry.name}(<unreadable>)"
        kind = type(action).__name__.lower()
        why = f" [{action.why}]" if action.why else ""
        prefix = f"[{task.tid}] {described} {kind}{why}"
        if isinstance(action, Emulate):
            trace.write(f"{prefix} = {_result(action.result)}\n")
            trace.flush()
            return action
        if isinstance(action, Wait):
            finish = action.finish

            def logged_finish(future: Future[Any]) -> int | Emulate:
                value = finish(future)
                shown = value.result if type(value) is Emulate else value
                trace.write(f"{prefix} = {_result(shown)}\n")
                trace.flush()
                return value

            return Wait(action.future, logged_finish, action.why)

        inner = action.on_exit if isinstance(action, ExitStop | Rewrite) else None

        def write(result: int) -> None:
            trace.write(f"{prefix} = {_result(result)}\n")
            trace.flush()

        def log_result(result: int) -> int | Inject | Emulate | None:
            replaced = inner(result) if inner is not None else None
            if type(replaced) is Inject:
                final = replaced.result

                def logged(results: list[int]) -> int | Emulate:
                    value = final(results)
                    write(value.result if type(value) is Emulate else value)
                    return value

                return Inject(replaced.calls, logged)
            shown = replaced.result if type(replaced) is Emulate else replaced
            write(result if shown is None else shown)
            return replaced

        if isinstance(action, Rewrite):
            return Rewrite(action.args, action.syscall, log_result, action.why)
        return ExitStop(log_result, action.why)


def _result(value: int) -> str:
    if -4096 < value < 0:
        return f"-1 {errno.errorcode.get(-value, str(-value))}"
    return str(value)


def _aligned(size: int) -> int:
    return (size + 7) & ~7


def _blocked_signals(tid: int) -> int:
    """The thread's blocked-signal mask (SigBlk in /proc/<tid>/status); 0 if unreadable."""
    try:
        with open(f"/proc/{tid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"SigBlk:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def read_tgid(tid: int) -> int:
    try:
        with open(f"/proc/{tid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"Tgid:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return tid
