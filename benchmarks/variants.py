"""The ways a scenario's program is run: natively, under a bare seccomp filter, under
mirrord-trace, under strace. Each is a command prefix, so any program can be run any way."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOOR_LAUNCHER = Path(__file__).resolve().parent / "floor.py"
# Used when mirrord_trace.syscall_table cannot be imported (it is the authoritative list).
FALLBACK_TRAPPED_SYSCALLS = ("openat", "newfstatat", "statx")


@dataclass(frozen=True)
class Variant:
    name: str
    prefix: tuple[str, ...]

    def wrap(self, command: list[str]) -> list[str]:
        return [*self.prefix, *command]


NATIVE = Variant("native", ())


def floor() -> Variant:
    """The program under an allow-all seccomp filter: the least any seccomp tracer can cost."""
    return Variant("floor", (sys.executable, str(FLOOR_LAUNCHER), "--"))


def mirrord_trace_executable() -> Path:
    """The console script next to this interpreter (the venv's), else the repository's venv."""
    beside_python = Path(sys.executable).parent / "mirrord-trace"
    return beside_python if beside_python.exists() else ROOT / ".venv" / "bin" / "mirrord-trace"


def mirrord_trace(extra_args: tuple[str, ...] = ()) -> Variant:
    return Variant("mirrord-trace", (str(mirrord_trace_executable()), "exec", *extra_args, "--"))


def mirrord_trace_notify(extra_args: tuple[str, ...] = ()) -> Variant:
    """The notification engine (what debuggers get): no ptrace, every trap a notification."""
    return Variant("mirrord-trace notify", (str(mirrord_trace_executable()), "exec",
                                            "--engine", "notify", *extra_args, "--"))


def trapped_syscall_names() -> tuple[str, ...]:
    try:
        from mirrord_trace.syscall_table import TRAPPED_SYSCALL_NAMES
    except Exception:  # the table is optional for benchmarking; any import problem -> fallback
        return FALLBACK_TRAPPED_SYSCALLS
    return tuple(TRAPPED_SYSCALL_NAMES)


def strace(syscalls: tuple[str, ...] | None = None) -> Variant:
    """strace stopping on the same syscalls mirrord-trace traps, with the same seccomp method.

    '?' tells strace to accept names it does not know, so a newer table cannot break it."""
    names = trapped_syscall_names() if syscalls is None else syscalls
    qualifier = "trace=" + ",".join(f"?{name}" for name in names)
    return Variant(
        "strace", ("strace", "-f", "--seccomp-bpf", "-e", qualifier, "-o", "/dev/null", "--")
    )
