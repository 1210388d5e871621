"""Installed filters on the real kernel: each test forks a child, installs filters prepared in the
parent (the supervisor's pattern: prepare before fork, install in the child), makes syscalls and
reports what it saw through a pipe."""

from __future__ import annotations

import ctypes
import errno
import json
import mmap
import os
import resource
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from seccomp import (
    ArgCondition,
    Errno,
    Kill,
    PreparedFilter,
    Rule,
    Trace,
    build_filter,
    prepare_filter,
    syscall_number,
)
from seccomp.bpf import Label, assemble, jump_if_greater_or_equal, load_word, ret

LIBC = ctypes.CDLL(None, use_errno=True)
RAW_SYSCALL = LIBC["syscall"]
RAW_SYSCALL.restype = ctypes.c_long
RAW_SYSCALL.argtypes = [ctypes.c_long, ctypes.c_ulong]
X32_SYSCALL_BIT = 0x4000_0000
RET_ALLOW = 0x7FFF_0000
RET_ERRNO = 0x0005_0000
CHILD_TIMEOUT = 30.0


def raw_syscall(number: int, argument: int = 0) -> int:
    """The result of syscall(number, argument), or -errno when it fails, as the kernel says it."""
    result = RAW_SYSCALL(number, argument)
    return -ctypes.get_errno() if result == -1 else result


def outcome(call: Callable[[], Any]) -> Any:
    """The call's result, or -errno of the OSError it raised."""
    try:
        return call()
    except OSError as error:
        return -error.errno


def read_until_eof(fd: int, deadline: float) -> bytes:
    chunks = []
    while True:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise TimeoutError
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def in_child(filters: list[PreparedFilter], probe: Callable[[], Any]) -> tuple[int, Any]:
    """Fork; the child installs `filters`, runs `probe` and sends back its JSON result.

    Returns the child's wait status and the result (None if the child died before sending it).
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 1
        try:
            os.close(read_end)
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a SIGSYS death leaves no core
            for prepared in filters:
                prepared.install()
            os.write(write_end, json.dumps(probe()).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        report = read_until_eof(read_end, time.monotonic() + CHILD_TIMEOUT)
    except TimeoutError:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail(f"the filtered child did not finish within {CHILD_TIMEOUT} s")
    finally:
        os.close(read_end)
    _, status = os.waitpid(pid, 0)
    return status, json.loads(report) if report else None


def test_errno_rules_and_conditions_apply_to_exactly_their_syscalls(tmp_path: Path) -> None:
    uname, close = syscall_number("uname"), syscall_number("close")
    prepared = prepare_filter(
        build_filter(
            [
                Rule(uname, Errno(errno.EOPNOTSUPP)),
                Rule(close, Errno(errno.ECHRNG), when=ArgCondition(0, ">=", 1000)),
            ]
        )
    )
    victim = tmp_path / "victim"
    victim.write_text("x")

    def probe() -> dict[str, Any]:
        low_fd = os.open(victim, os.O_RDONLY)
        other_fd = os.open(victim, os.O_RDONLY)
        return {
            "uname": outcome(os.uname),
            "close 1001": outcome(lambda: os.close(1001)),
            "close low fd": outcome(lambda: os.close(low_fd)),
            # Upper half set, lower half a real fd: only the low 32 bits are compared, so the
            # filter allows it and the kernel (which takes an unsigned int) closes other_fd.
            "close high bits": raw_syscall(close, (1 << 32) | other_fd),
            "other fd afterwards": outcome(lambda: os.fstat(other_fd).st_size),
            "getpid": os.getpid(),
            "getcwd": os.getcwd(),
        }

    status, seen = in_child([prepared], probe)
    assert os.waitstatus_to_exitcode(status) == 0
    assert seen["uname"] == -errno.EOPNOTSUPP
    assert seen["close 1001"] == -errno.ECHRNG
    assert seen["close low fd"] is None
    assert seen["close high bits"] == 0
    assert seen["other fd afterwards"] == -errno.EBADF
    assert seen["getpid"] != os.getpid()  # ran in the child, and getpid was allowed
    assert seen["getcwd"] == os.getcwd()


def test_trace_rule_without_a_tracer_fails_the_syscall_with_enosys() -> None:
    prepared = prepare_filter(build_filter([Rule(syscall_number("getcwd"), Trace(tag=5))]))

    def probe() -> dict[str, Any]:
        return {"getcwd": outcome(os.getcwd), "uname": outcome(lambda: os.uname().sysname)}

    status, seen = in_child([prepared], probe)
    assert os.waitstatus_to_exitcode(status) == 0
    assert seen == {"getcwd": -errno.ENOSYS, "uname": "Linux"}


def x32_marker_filter() -> PreparedFilter:
    """A filter that answers every x32 number with EXDEV and allows the rest.

    Installed before ours it reveals ours: between two ERRNO verdicts the kernel keeps the one of
    the most recently installed filter, so x32 calls fail with EXDEV if our filter allows them
    and with our errno if it rejects them. That works whether or not the kernel supports x32.
    """
    return prepare_filter(
        assemble(
            [
                load_word(0),
                jump_if_greater_or_equal(X32_SYSCALL_BIT, "x32"),
                ret(RET_ALLOW),
                Label("x32"),
                ret(RET_ERRNO | errno.EXDEV),
            ]
        )
    )


def test_x32_syscalls_are_refused_with_enosys() -> None:
    getpid = syscall_number("getpid")
    ours = prepare_filter(build_filter([Rule(syscall_number("uname"), Errno(errno.EPERM))]))

    def probe() -> dict[str, Any]:
        return {"x32 getpid": raw_syscall(X32_SYSCALL_BIT | getpid), "getpid": os.getpid()}

    _, marker_only = in_child([x32_marker_filter()], probe)
    status, with_ours = in_child([x32_marker_filter(), ours], probe)
    assert marker_only["x32 getpid"] == -errno.EXDEV  # the marker works
    assert os.waitstatus_to_exitcode(status) == 0
    assert with_ours["x32 getpid"] == -errno.ENOSYS
    assert isinstance(with_ours["getpid"], int)


# mov eax, 20 (i386 getpid); int 0x80; ret -- the i386 syscall entry from a 64-bit process.
I386_GETPID = b"\xb8\x14\x00\x00\x00\xcd\x80\xc3"


def i386_getpid() -> int:
    code = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    code.write(I386_GETPID)
    address = ctypes.addressof(ctypes.c_char.from_buffer(code))
    return int(ctypes.CFUNCTYPE(ctypes.c_int)(address)())


def test_foreign_architecture_syscalls_kill_the_process() -> None:
    status, pid_seen = in_child([], i386_getpid)
    if not os.WIFEXITED(status) or not isinstance(pid_seen, int) or pid_seen <= 0:
        pytest.skip("kernel without IA32 emulation: int 0x80 does not reach the i386 syscall table")
    prepared = prepare_filter(build_filter([Rule(syscall_number("uname"), Errno(errno.EPERM))]))
    status, seen = in_child([prepared], i386_getpid)
    assert seen is None
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS


def test_kill_rule_kills_the_whole_process() -> None:
    prepared = prepare_filter(build_filter([Rule(syscall_number("getppid"), Kill())]))

    def probe() -> str:
        # The call comes from a second thread: killing only that thread would let this one
        # report back.
        # ctypes releases the GIL during the call, so a killed worker cannot take it along.
        worker = threading.Thread(target=raw_syscall, args=(syscall_number("getppid"),))
        worker.start()
        worker.join(timeout=5)
        return "survived"

    status, seen = in_child([prepared], probe)
    assert seen is None
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS


def test_kernel_refusals_raise_oserror_with_errno() -> None:
    good = build_filter([Rule(syscall_number("uname"), Errno(errno.EPERM))])
    # Opcode 0xffff is not a BPF instruction; the kernel rejects the program with EINVAL.
    invalid_program = prepare_filter(b"\xff\xff\x00\x00\x00\x00\x00\x00" + good.to_bytes())
    unknown_flag = prepare_filter(good, flags=1 << 31)

    def probe(prepared: PreparedFilter) -> Callable[[], Any]:
        def attempt() -> Any:
            try:
                prepared.install()
            except OSError as error:
                return [error.errno, str(error)]
            return "installed"

        return attempt

    for prepared in (invalid_program, unknown_flag):
        status, seen = in_child([], probe(prepared))
        assert os.waitstatus_to_exitcode(status) == 0
        assert seen[0] == errno.EINVAL
        assert "seccomp(SECCOMP_SET_MODE_FILTER)" in seen[1]


@pytest.mark.parametrize("size", [0, 7, 8 * 4097])
def test_malformed_program_bytes_are_refused_before_fork(size: int) -> None:
    with pytest.raises(ValueError, match=r"build it with seccomp\.build_filter"):
        prepare_filter(b"\x06" * size)


INSTALL_ONLY_SCRIPT = """
import errno, os
from seccomp import Errno, Rule, build_filter, prepare_filter, syscall_number
prepared = prepare_filter(build_filter([Rule(syscall_number("uname"), Errno(errno.EPERM))]))
os.write(1, b"begin install\\n")
prepared.install()
os.write(1, b"end install\\n")
"""


def test_install_makes_only_the_two_syscalls(tmp_path: Path) -> None:
    """Nothing that could take a lock or load code (mmap, brk, openat, futex) runs in install,
    which is what makes it usable between fork and exec."""
    trace = tmp_path / "strace.out"
    subprocess.run(
        ["strace", "-qq", "-o", str(trace), sys.executable, "-c", INSTALL_ONLY_SCRIPT],
        check=True,
        capture_output=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    lines = trace.read_text().splitlines()
    begin = next(i for i, line in enumerate(lines) if "begin install" in line)
    end = next(i for i, line in enumerate(lines) if "end install" in line)
    called = [line.split("(", 1)[0] for line in lines[begin + 1 : end]]
    assert called == ["prctl", "seccomp"], lines[begin : end + 1]
