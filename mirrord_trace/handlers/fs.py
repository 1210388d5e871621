"""Filesystem syscalls: decide local / remote / not found for each path they name.

Follow one call: the filter traps `openat(AT_FDCWD, "/app/config.yaml", O_RDONLY)`; the handler
makes the path absolute (a relative path against the cwd or the dirfd, mapped back to the
remote path when those are local stand-ins of remote directories; handlers.fs_paths) and asks
the PathPolicy:
  - local:      the call runs unchanged;
  - not found:  it is skipped with ENOENT;
  - remote:     handlers.fs_remote serves it (opens through local stand-ins, metadata in one
                agent round trip each), handlers.fs_changes when it changes the target.
Every decision's `why` names the rule that decided (shown by --trace). Without a target only
the path modules are loaded: nothing is remote, so only the not-found rules need the tracer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from mirrord_trace.config.model import FsMode
from mirrord_trace.handlers.actions import Action
from mirrord_trace.handlers.call import SyscallCall
from mirrord_trace.handlers.fs_paths import Handler, PathHandlers
from mirrord_trace.handlers.path_policy import PathPolicy, Whereabouts
from mirrord_trace.handlers.trap import SessionContext, Trap
from mirrord_trace.syscall_table import FS_PATH_SYSCALLS, SyscallShape


def traps(context: SessionContext) -> list[Trap]:
    fs = context.config.feature.fs
    if fs.mode == FsMode.LOCAL:
        return []
    where = Whereabouts.current(context.program)
    if context.agent is None:
        policy = PathPolicy(fs, targetless=True, where=where, explain=context.explain)
        handlers = PathHandlers(policy, explain=context.explain)
        # Allow or ENOENT only: decided through seccomp notifications, with no ptrace stop.
        traps = [Trap(s, handlers.decide_only(s), notify=True) for s in FS_PATH_SYSCALLS.values()]
        return _with_mapping(traps, fs.mapping, handlers)
    return remote_traps(context, PathPolicy(fs, where=where, explain=context.explain))


def _with_mapping(traps: list[Trap], mapping: tuple, paths: PathHandlers) -> list[Trap]:
    """feature.fs.mapping: the one-path calls rewrite their path first (handlers.fs_mapping)."""
    if not mapping:
        return traps
    from mirrord_trace.handlers.fs_mapping import mapped_traps

    return mapped_traps(traps, mapping, paths)


_OPEN_NAMES = ("open", "openat", "openat2", "creat")
_STAT_NAMES = ("stat", "lstat", "newfstatat", "statx")
_ACCESS_NAMES = ("access", "faccessat", "faccessat2")
_READLINK_NAMES = ("readlink", "readlinkat")
_ANSWERED_NAMES = frozenset(_STAT_NAMES + _ACCESS_NAMES + _READLINK_NAMES)


def remote_traps(context: SessionContext, policy: PathPolicy) -> list[Trap]:
    from mirrord_trace.handlers.fs_attributes import AttributeHandlers, attribute_traps
    from mirrord_trace.handlers.fs_changes import (
        FD_CHANGE_SYSCALLS,
        FS_WRITE_SYSCALLS,
        FSYNC_SYSCALLS,
        RESIZE_SYSCALLS,
        ChangeHandlers,
    )
    from mirrord_trace.handlers.fs_remote import GETCWD, RemoteFs, report_agent_loss

    agent = context.agent
    remote = RemoteFs(agent)
    context.end_hooks.append(remote.close)
    if agent.on_lost is None:
        agent.on_lost = report_agent_loss
    handlers = ChangeHandlers(policy, remote, explain=context.explain)
    by_name: dict[str, Callable[[SyscallShape], Handler]] = {
        **dict.fromkeys(_OPEN_NAMES, handlers.open_handler),
        **dict.fromkeys(_STAT_NAMES, handlers.stat_handler),
        **dict.fromkeys(_ACCESS_NAMES, handlers.access_handler),
        **dict.fromkeys(_READLINK_NAMES, handlers.readlink_handler),
        "chdir": handlers.chdir_handler,
    }
    # Metadata calls only ever run locally or get an answer (Allow, Emulate): they are decided
    # through seccomp notifications, in the notification thread, while opens (rewritten to local
    # stand-ins), chdir and changes stay on ptrace stops. Both threads share the family's state
    # (stand-ins, pending write-backs), so every handler runs under one lock.
    serialized = _Serialized()
    traps = [
        Trap(shape, serialized(by_name[shape.name](shape)), notify=shape.name in _ANSWERED_NAMES)
        for shape in FS_PATH_SYSCALLS.values()
    ]
    for shape in FS_WRITE_SYSCALLS:
        two_paths = shape.name.startswith(("rename", "link"))
        build = handlers.two_path_handler if two_paths else handlers.change_handler
        traps.append(Trap(shape, serialized(build(shape))))
    traps.append(Trap(GETCWD, serialized(handlers.getcwd), notify=True))
    # Extended attributes, statfs and inotify watches: answered (or refused) in one stop each.
    attributes = AttributeHandlers(policy, remote, explain=context.explain)
    traps += [
        Trap(shape, serialized(handler), notify=True)
        for shape, handler in attribute_traps(attributes)
    ]
    if policy.can_write_remotely:
        traps += [Trap(shape, serialized(handlers.fsync)) for shape in FSYNC_SYSCALLS]
        traps += [Trap(shape, serialized(handlers.resize)) for shape in RESIZE_SYSCALLS]
        traps += [Trap(shape, serialized(handlers.fd_change)) for shape in FD_CHANGE_SYSCALLS]
    return _with_mapping(traps, context.config.feature.fs.mapping, handlers)


class _Serialized:
    """Wraps handlers so that at most one of them runs at a time, whichever thread calls."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __call__(self, handler: Handler) -> Handler:
        lock = self._lock

        def run(call: SyscallCall) -> Action | None:
            with lock:
                return handler(call)

        return run
