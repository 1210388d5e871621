"""feature.fs.mapping: the path a program names is rewritten before anything is decided.

As in mirrord, each entry is a regular expression and its replacement (capture groups
allowed); the first entry whose expression is found in the absolute path rewrites it (the
first match only). The rewritten path then goes through the usual rules: read from the target,
locally, or not found. A local call runs with the rewritten path in place of the program's
(the tracer copies it into the tracee), so the mapping holds on this machine too.

Calls that name one path are mapped (opens, stats, access, readlink, chdir, mkdir, unlink,
chmod...); those that name two (rename, link, symlink) keep their paths. A mapped call needs
a ptrace stop (a seccomp notification cannot change an argument), so with a mapping the
path calls are not decided through notifications.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace

from mirrord_trace.handlers.actions import Action, Allow, ExitStop, Rewrite
from mirrord_trace.handlers.call import MemoryReader, SyscallCall
from mirrord_trace.handlers.fs_paths import Handler, NotMine, PathHandlers
from mirrord_trace.handlers.trap import Trap

Mapping = tuple[tuple[re.Pattern[str], str], ...]


def mapped_path(mapping: Mapping, path: str) -> str | None:
    """The path as the first matching entry rewrites it; None when no entry matches."""
    for pattern, replacement in mapping:
        if pattern.search(path):
            return pattern.sub(replacement, path, count=1)
    return None


class _MappedMemory:
    """The tracee's memory as the handlers see it: the path argument reads as the mapped path."""

    def __init__(self, memory: MemoryReader, address: int, path: bytes) -> None:
        self._memory = memory
        self._address = address
        self._path = path

    def read(self, address: int, size: int) -> bytes:
        return self._memory.read(address, size)

    def read_cstring(self, address: int, limit: int = 4096) -> bytes:
        if address == self._address:
            return self._path
        return self._memory.read_cstring(address, limit)


def mapped_traps(traps: list[Trap], mapping: Mapping, paths: PathHandlers) -> list[Trap]:
    """`traps`, the one-path calls among them mapped (and decided on ptrace stops)."""
    result = []
    for trap in traps:
        if trap.shape.args.count("path") != 1:
            result.append(trap)
            continue
        handler = _mapped(trap.shape.args.index("path"), trap.shape.arg_index("dirfd"),
                          trap.handler, mapping, paths)  # fmt: skip
        result.append(replace(trap, handler=handler, notify=False))
    return result


def _mapped(
    path_index: int,
    dirfd_index: int | None,
    handler: Handler,
    mapping: Mapping,
    paths: PathHandlers,
) -> Handler:
    def handle(call: SyscallCall) -> Action | None:
        raw = call.memory.read_cstring(call.args[path_index])
        try:
            absolute = paths.absolute_from(raw, call, dirfd_index)
        except NotMine:
            return handler(call)
        mapped = mapped_path(mapping, absolute)
        if mapped is None or mapped == absolute:
            return handler(call)
        encoded = os.fsencode(mapped)
        memory = _MappedMemory(call.memory, call.args[path_index], encoded)
        action = handler(SyscallCall(call.tid, call.tgid, call.nr, call.args, memory))
        why = f"mapped {absolute} -> {mapped}"
        argument = {path_index: encoded + b"\0"}
        # The kernel must see the mapped path wherever the call runs as it is.
        if action is None or isinstance(action, Allow):
            reason = action.why if isinstance(action, Allow) and action.why else "local"
            return Rewrite(argument, why=f"{why}; {reason}")
        if isinstance(action, ExitStop):
            return Rewrite(argument, on_exit=action.on_exit, why=f"{why}; {action.why}")
        if isinstance(action, Rewrite) and path_index not in action.args:
            return replace(action, args={**argument, **action.args}, why=f"{why}; {action.why}")
        return action

    return handle
