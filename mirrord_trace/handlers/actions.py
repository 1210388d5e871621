"""What a handler tells the tracer to do with one trapped syscall.

Handlers are pure: they look at a decoded call and return one of these values; the tracer
(mirrord_trace.tracer) is the only code that turns them into ptrace requests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from concurrent.futures import Future

# A value a handler puts in an argument register: an int is written as is; bytes are copied
# into the tracee's scratch page and the register receives their address.
ArgValue = int | bytes
# An injected call's arguments: fixed, or computed from the results of the calls before it.
InjectArgs = tuple[int, ...] | Callable[[list[int]], tuple[int, ...]]


@dataclass(frozen=True, slots=True)
class Allow:
    """Let the syscall run unchanged (one seccomp stop, no exit stop)."""

    why: str = ""


@dataclass(frozen=True, slots=True)
class Emulate:
    """Skip the syscall; the tracee sees `result` (a negative errno for failures).

    `writes` are (address, bytes) pairs copied into tracee memory first, e.g. a stat buffer.
    """

    result: int
    writes: tuple[tuple[int, bytes], ...] = ()
    why: str = ""


@dataclass(frozen=True, slots=True)
class Rewrite:
    """Run the syscall with some argument registers replaced (index 0..5 -> value).

    `syscall` optionally replaces the syscall number itself.
    """

    args: dict[int, ArgValue] = field(default_factory=dict)
    syscall: int | None = None
    on_exit: ExitCallback | None = None
    why: str = ""


@dataclass(frozen=True, slots=True)
class ExitStop:
    """Let the syscall run and call `on_exit(result)` at the exit stop.

    The callback may return an int to replace the result the tracee sees, or None to keep it.
    Exit stops cost a second stop: prefer Emulate where possible.
    """

    on_exit: ExitCallback
    why: str = ""


@dataclass(frozen=True, slots=True)
class Inject:
    """Returned by an exit callback: run these syscalls in the tracee, then report `result`.

    Each call is (syscall number, up to six int arguments), the arguments given as they are or
    as a function of the results of the calls before it (an fd one of them returned). `result`
    maps the injected calls' results to what the program sees from its own syscall (an int, or
    an Emulate whose writes go to tracee memory first). Example: move a new fd above the trap
    base with dup3 + close, so later calls on it can be trapped by fd number alone.
    """

    calls: tuple[tuple[int, InjectArgs], ...]
    result: Callable[[list[int]], int | Emulate]


@dataclass(frozen=True, slots=True)
class Wait:
    """Park the thread until `future` is done; the tracee then sees `finish(future)`.

    For work that takes a round trip (connecting from the target): the tracer goes on serving
    the program's other threads meanwhile. The thread waits in the kernel (its syscall becomes an
    interruptible ppoll) and is woken by a signal it never sees. `finish` runs in the tracer
    thread once the future is done and returns the result (a negative errno for failures), or
    an Emulate whose writes go to tracee memory first.
    """

    future: Future[Any]
    finish: Callable[[Future[Any]], int | Emulate]
    why: str = ""


@dataclass(frozen=True, slots=True)
class OpenInstead:
    """Serve an open with a local file (a stand-in for a remote one) in place of the program's
    path; the program gets a descriptor of `path` opened with `flags` (and `mode`).

    Engine-neutral: the ptrace engine carries out `rewrite` (the path argument, and flags,
    rewritten in place); the notification engine opens `path` itself and injects the descriptor
    into the program as the call's answer (SECCOMP_IOCTL_NOTIF_ADDFD with SEND). `on_done` gets
    the program's result (its new fd or a negative errno) once the program holds the file.
    """

    path: bytes
    flags: int
    mode: int
    rewrite: Rewrite
    on_done: Callable[[int], None] | None = None
    why: str = ""


# An exit callback may also return an Emulate: its writes go to tracee memory and its result
# replaces the syscall's (e.g. rewriting the source address a recvfrom reported).
ExitCallback = Callable[[int], "int | Inject | Emulate | None"]
# `why` is the decision in words ("local: /usr/** is read locally"), shown by --trace.
Action = Allow | Emulate | Rewrite | ExitStop | Wait | OpenInstead

ALLOW = Allow()
