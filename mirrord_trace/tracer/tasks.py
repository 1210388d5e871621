"""Bookkeeping of traced threads and the address spaces they run in.

A thread (Task) belongs to one AddressSpace; threads and CLONE_VM children (vfork) share one,
fork copies one (scratch regions included, at the same addresses), exec replaces it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from mirrord_trace.handlers.actions import Action, Wait
from mirrord_trace.tracer.memory import PAGE_SIZE, TraceeMemory

# Rewritten arguments (paths, sockaddrs) live in a per-thread slot of a scratch region mapped
# into the tracee, never on its stack: Go goroutine stacks are tiny.
SLOT_SIZE = 2 * PAGE_SIZE
SLOTS_PER_REGION = 64
REGION_SIZE = SLOT_SIZE * SLOTS_PER_REGION


@dataclass
class AddressSpace:
    leader: int
    regions: list[int] = field(default_factory=list)
    _memory: TraceeMemory | None = None
    _slots: dict[int, int] = field(default_factory=dict)
    _free: list[int] = field(default_factory=list)

    def memory(self, tid: int) -> TraceeMemory:
        # Opened through the thread that needs it: the leader may have exited already.
        if self._memory is None:
            self._memory = TraceeMemory(tid)
        return self._memory

    def copy_for_fork(self, child: int) -> AddressSpace:
        return AddressSpace(child, regions=list(self.regions))

    def slot(self, tid: int) -> int | None:
        """This thread's scratch slot address, or None when a new region must be mapped first."""
        address = self._slots.get(tid)
        if address is not None:
            return address
        if not self._free:
            return None
        address = self._free.pop()
        self._slots[tid] = address
        return address

    def add_region(self, base: int) -> None:
        self.regions.append(base)
        self._free.extend(base + i * SLOT_SIZE for i in reversed(range(SLOTS_PER_REGION)))

    def release(self, tid: int) -> None:
        address = self._slots.pop(tid, None)
        if address is not None:
            self._free.append(address)

    def _refill_from_regions(self) -> None:
        used = set(self._slots.values())
        self._free = [
            base + i * SLOT_SIZE
            for base in self.regions
            for i in reversed(range(SLOTS_PER_REGION))
            if base + i * SLOT_SIZE not in used
        ]

    def __post_init__(self) -> None:
        if self.regions and not self._free:
            self._refill_from_regions()

    def close(self) -> None:
        if self._memory is not None:
            self._memory.close()
            self._memory = None


@dataclass(slots=True)
class Task:
    tid: int
    tgid: int
    space: AddressSpace
    # Set while the thread runs a syscall whose exit stop a handler asked for.
    on_exit: Callable[[int], int | None] | None = None
    # The name of the syscall in flight, for --trace lines completed at the exit stop.
    trace_prefix: str | None = None
    # An action decided before a scratch region existed, applied when the syscall re-traps.
    replay: Action | None = None
    # A Wait whose answer this thread is parked for (in a ppoll the tracer put in its place).
    parked: Wait | None = None
    # Wake-up signals the tracer sent this thread (Wait) and has not yet kept from the program.
    wakes_pending: int = 0
    # Seen before its parent's fork/clone event: its address space is a guess until that event
    # arrives — unless it has exec'd meanwhile, when the guess is replaced by its own new space.
    adopted: bool = False
