"""A bug in an outgoing handler must neither kill the program nor go unseen: `guarded` runs
the handler and, when it fails unexpectedly, lets the call run unchanged (or a Wait's finish
answer EIO), saying so once per kind of failure."""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from mirrord_trace.handlers.actions import Action, Emulate, Wait
from mirrord_trace.handlers.call import SyscallCall
from mirrord_trace.tracer.memory import TraceeMemoryError

_reported_failures: set[str] = set()


def _report_failure(where: str, error: BaseException) -> None:
    """One line per kind of failure: a bug here must not kill the program, nor go unseen."""
    key = f"{where}:{type(error).__name__}"
    if key not in _reported_failures:
        _reported_failures.add(key)
        print(f"mirrord-trace: error: outgoing {where} failed: {error!r} (the call runs "
              "unchanged; please report this)", file=sys.stderr, flush=True)


def guarded(handler: Callable[[SyscallCall], Action | None]) -> Callable[[SyscallCall],
                                                                          Action | None]:
    """The handler, or None (the syscall runs as the program made it) if it fails unexpectedly.
    A Wait's finish is guarded the same way: it answers EIO instead."""
    name = handler.__name__

    def run(call: SyscallCall) -> Action | None:
        try:
            action = handler(call)
        except TraceeMemoryError:
            raise  # the tracer answers EFAULT: the program passed a bad pointer
        except Exception as error:
            _report_failure(name, error)
            return None
        if isinstance(action, Wait):
            return Wait(action.future, _guarded_finish(name, action.finish), action.why)
        return action

    return run


def _guarded_finish(
    name: str, finish: Callable[[Future[Any]], int | Emulate]
) -> Callable[[Future[Any]], int | Emulate]:
    def run(done: Future[Any]) -> int | Emulate:
        try:
            return finish(done)
        except TraceeMemoryError:
            return -errno.EFAULT
        except Exception as error:
            _report_failure(name, error)
            return -errno.EIO

    return run
