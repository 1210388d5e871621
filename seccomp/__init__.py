"""seccomp-bpf for mirrord-trace: declarative rules -> a BPF program -> installed filter.

    program = build_filter([Rule(syscall_number("openat"), Trace(tag=1)), ...])
    prepared = prepare_filter(program)      # before fork: all allocation happens here
    prepared.install()                      # in the child, right before exec
"""

from seccomp.bpf import AssemblyError, Instruction, Program, ProgramTooLongError
from seccomp.filter import (
    Allow,
    ArgCondition,
    Errno,
    FilterSpecError,
    Kill,
    Notify,
    Rule,
    Trace,
    build_filter,
)
from seccomp.install import PreparedFilter, install_filter, prepare_filter
from seccomp.numbers import UnknownSyscallError, syscall_name, syscall_number

__all__ = [
    "Allow",
    "ArgCondition",
    "AssemblyError",
    "Errno",
    "FilterSpecError",
    "Instruction",
    "Kill",
    "Notify",
    "PreparedFilter",
    "Program",
    "ProgramTooLongError",
    "Rule",
    "Trace",
    "UnknownSyscallError",
    "build_filter",
    "install_filter",
    "prepare_filter",
    "syscall_name",
    "syscall_number",
]
