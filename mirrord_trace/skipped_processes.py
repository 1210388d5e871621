"""skip_processes, skip_build_tools, skip_extra_build_tools: processes that run untouched.

As in mirrord, a process is judged by its executable's file name and by how it was invoked
(the last part of argv[0]), each time it executes a program: `go run .` builds with `go` and
`compile` untouched (their files, their network: this machine's), then runs the program it
built, which is not a build tool, under the usual rules. A skipped process's trapped calls all
run as they are; its children are judged on their own.

mirrord's build tools (skip_build_tools, on by default): as, cc, ld, go, air, asm, cc1, cgo,
dlv, gcc, git, link, math, cargo, hpack, rustc, compile, collect2, cargo-watch, debugserver,
jspawnhelper, bazel-real, clang; skip_extra_build_tools adds names to them.

Only sessions with a target skip (without one nothing is remote, and the programs' execs are
then not trapped at all).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

from mirrord_trace.syscall_table import SyscallShape

BUILD_TOOLS = frozenset(
    {
        "as", "cc", "ld", "go", "air", "asm", "cc1", "cgo", "dlv", "gcc", "git", "link",
        "math", "cargo", "hpack", "rustc", "compile", "collect2", "cargo-watch", "debugserver",
        "jspawnhelper", "bazel-real", "clang",
    }
)  # fmt: skip
EXEC_SHAPES = (
    SyscallShape("execve", ("path", "ptr", "ptr")),
    SyscallShape("execveat", ("dirfd", "path", "ptr", "ptr", "atflags")),
)
# Verdicts kept at most (pids are reused only after pid_max, 4M by default: the oldest go).
MAX_VERDICTS = 65536


def skipped_names(
    skip_processes: Iterable[str], skip_build_tools: bool, extra_build_tools: Iterable[str]
) -> frozenset[str]:
    names = set(skip_processes)
    if skip_build_tools:
        names |= BUILD_TOOLS | set(extra_build_tools)
    return frozenset(names)


def process_names(tgid: int) -> tuple[str, str]:
    """(executable's file name, argv[0]'s last part) of a process; '' when unknown."""
    try:
        executable = os.path.basename(os.readlink(f"/proc/{tgid}/exe"))
    except OSError:
        executable = ""
    try:
        with open(f"/proc/{tgid}/cmdline", "rb") as stream:
            argv0 = stream.read().split(b"\0", 1)[0]
        invoked_as = os.fsdecode(argv0).rsplit("/", 1)[-1]
    except OSError:
        invoked_as = ""
    return executable, invoked_as


class SkippedProcesses:
    """Which processes run untouched; judged once per process and program (see the module)."""

    def __init__(
        self, names: frozenset[str], names_of: Callable[[int], tuple[str, str]] = process_names
    ) -> None:
        self.names = names
        self._names_of = names_of
        self._verdicts: dict[int, bool] = {}
        self._lock = threading.Lock()

    def skipped(self, tgid: int) -> bool:
        verdict = self._verdicts.get(tgid)
        if verdict is None:
            verdict = self._judge(tgid)
            with self._lock:
                if len(self._verdicts) >= MAX_VERDICTS:
                    self._verdicts.pop(next(iter(self._verdicts)))
                self._verdicts[tgid] = verdict
        return verdict

    def _judge(self, tgid: int) -> bool:
        return any(name in self.names for name in self._names_of(tgid) if name)

    def executing(self, tgid: int) -> bool:
        """The process is about to execute another program: whether it is skipped as it is
        now; it is judged again, as the new program, at its next call."""
        verdict = self._verdicts.get(tgid)
        with self._lock:
            self._verdicts.pop(tgid, None)
        return self._judge(tgid) if verdict is None else verdict

    def wrap(self, handler: Callable[[Any], Any], execs: bool) -> Callable[[Any], Any]:
        """`handler`, except for skipped processes (their calls run as they are: None)."""

        def untouched_if_skipped(call: Any) -> Any:
            skipped = self.executing(call.tgid) if execs else self.skipped(call.tgid)
            return None if skipped else handler(call)

        return untouched_if_skipped
