"""`python benchmarks/floor.py [--] PROGRAM [ARGS...]`: exec PROGRAM under an allow-all seccomp
filter (architecture check + allow). It is the floor for untrapped syscalls: what any
seccomp-based tracer costs a syscall it does not trap.

Run as a script (not `-m`) so it needs only the installed `seccomp` package, not the cwd.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print(
            "floor: error: no PROGRAM given (usage: floor.py [--] PROGRAM [ARGS...])",
            file=sys.stderr,
        )
        return 2
    try:
        from seccomp import build_filter, prepare_filter
    except ImportError as error:
        print(
            f"floor: error: the seccomp package is unavailable ({error}); "
            "install the project with `make venv`",
            file=sys.stderr,
        )
        return 2
    try:
        prepare_filter(build_filter([])).install()
        os.execvp(argv[0], argv)
    except OSError as error:
        print(f"floor: error: {argv[0]}: {error.strerror or error}", file=sys.stderr)
        return 127 if isinstance(error, FileNotFoundError) else 1
    return 0  # not reached: execvp replaced us


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
