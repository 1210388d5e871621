"""The example programs behave as documented when run natively.

They are the measuring instruments of every other test, so each subcommand is checked against
the real file system, real sockets and real processes, with expectations computed here (by
Python's own os/socket calls), not copied from a previous run.
"""

from __future__ import annotations

import errno
import hashlib
import http.server
import os
import re
import signal
import socket
import stat
import subprocess
import threading
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from examples.go_env import offline_go_environment
from tests.conftest import BIN_DIR, ROOT

C_PROBES = ["probe-static", "probe-musl", "probe-dynamic"]
ALL_PROBES = [*C_PROBES, "probe-go"]
TIMEOUT = 60

Bins = Callable[[str], Path]


def run(program: Path | str, *args: str | Path, **kwargs) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(program), *map(str, args)], capture_output=True, timeout=TIMEOUT, **kwargs
    )


def output_lines(result: subprocess.CompletedProcess[bytes]) -> list[str]:
    return result.stdout.decode().splitlines()


def stat_fields(result: subprocess.CompletedProcess[bytes]) -> dict[str, str]:
    assert result.returncode == 0, result.stderr
    return dict(field.split("=", 1) for field in result.stdout.decode().split())


def expected_stat_fields(st: os.stat_result) -> dict[str, str]:
    kinds = {
        stat.S_IFREG: "regular",
        stat.S_IFDIR: "directory",
        stat.S_IFLNK: "symlink",
        stat.S_IFIFO: "fifo",
        stat.S_IFSOCK: "socket",
    }
    return {
        "size": str(st.st_size),
        "mode": "0" + format(stat.S_IMODE(st.st_mode), "o"),
        "type": kinds[stat.S_IFMT(st.st_mode)],
        "nlink": str(st.st_nlink),
        "ino": str(st.st_ino),
    }


def assert_failed_with(
    result: subprocess.CompletedProcess[bytes], code: int, op: str, what: Path | str
) -> None:
    """probe's failure contract: exit status = errno, one `probe: op what: strerror` line."""
    assert result.returncode == code, result.stderr
    message = f"probe: {op} {what}: {os.strerror(code)}\n"
    # Go spells error strings in lower case; the words are the same.
    assert result.stderr.decode().lower() == message.lower()


def readelf_program_headers(path: Path) -> str:
    return subprocess.run(
        ["readelf", "--program-headers", "--wide", str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=TIMEOUT,
    ).stdout


@pytest.mark.parametrize(
    ("name", "static"),
    [
        ("probe-static", True),
        ("probe-musl", True),
        ("probe-go", True),
        ("go-run-module", True),
        ("busybox", True),
        ("probe-dynamic", False),
    ],
)
def test_linkage_is_what_the_name_promises(bins: Bins, name: str, static: bool) -> None:
    headers = readelf_program_headers(bins(name))
    assert "LOAD" in headers
    has_interpreter = re.search(r"^\s*INTERP\s", headers, re.MULTILINE) is not None
    assert has_interpreter is not static


@pytest.mark.parametrize("probe", ALL_PROBES)
def test_unknown_subcommand_is_a_usage_error(bins: Bins, probe: str) -> None:
    result = run(bins(probe), "no-such-subcommand")
    assert result.returncode == 64
    assert result.stderr.decode().count("\n") == 1
    assert "no-such-subcommand" in result.stderr.decode()


# ---- files ----


@pytest.mark.parametrize("probe", ALL_PROBES)
def test_cat_concatenates_files_byte_for_byte(bins: Bins, probe: str, tmp_path: Path) -> None:
    first, second = tmp_path / "first.bin", tmp_path / "second.bin"
    first.write_bytes(os.urandom(200_000))  # several read() calls
    second.write_bytes(b"tail\n")
    result = run(bins(probe), "cat", first, second)
    assert result.returncode == 0, result.stderr
    assert result.stdout == first.read_bytes() + second.read_bytes()


@pytest.mark.parametrize("probe", ALL_PROBES)
def test_cat_of_missing_file_exits_with_enoent(bins: Bins, probe: str, tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    assert_failed_with(run(bins(probe), "cat", missing), errno.ENOENT, "cat", missing)


@pytest.mark.parametrize("probe", ALL_PROBES)
def test_stat_and_lstat_report_what_the_kernel_says(bins: Bins, probe: str, tmp_path: Path) -> None:
    regular = tmp_path / "file"
    regular.write_bytes(b"x" * 1234)
    regular.chmod(0o640)
    os.link(regular, tmp_path / "hardlink")
    link = tmp_path / "link"
    link.symlink_to(regular)
    for path in (regular, tmp_path, link):
        assert stat_fields(run(bins(probe), "stat", path)) == expected_stat_fields(os.stat(path))
        assert stat_fields(run(bins(probe), "lstat", path)) == expected_stat_fields(os.lstat(path))
    assert stat_fields(run(bins(probe), "lstat", link))["type"] == "symlink"
    assert stat_fields(run(bins(probe), "stat", regular))["nlink"] == "2"
    assert_failed_with(
        run(bins(probe), "stat", tmp_path / "nope"), errno.ENOENT, "stat", tmp_path / "nope"
    )


@pytest.mark.parametrize("probe", ALL_PROBES)
def test_ls_lists_every_entry_in_byte_order(bins: Bins, probe: str, tmp_path: Path) -> None:
    # Enough long names that the directory takes several getdents64 calls.
    names = [f"entry-{i:04d}-{'x' * 40}" for i in range(400)]
    names += ["B", "a", ".hidden", "Zebra", "_under"]
    for name in names:
        (tmp_path / name).touch()
    (tmp_path / "subdir").mkdir()
    result = run(bins(probe), "ls", tmp_path)
    assert result.returncode == 0, result.stderr
    assert output_lines(result) == sorted([*names, "subdir"])


@pytest.mark.parametrize("probe", ALL_PROBES)
def test_ls_of_a_file_fails_with_enotdir(bins: Bins, probe: str, tmp_path: Path) -> None:
    regular = tmp_path / "file"
    regular.touch()
    assert_failed_with(run(bins(probe), "ls", regular), errno.ENOTDIR, "ls", regular)


@pytest.mark.parametrize("probe", ALL_PROBES)
def test_readlink_prints_the_target(bins: Bins, probe: str, tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to("../some/where else")
    assert output_lines(run(bins(probe), "readlink", link)) == ["../some/where else"]
    assert_failed_with(run(bins(probe), "readlink", tmp_path), errno.EINVAL, "readlink", tmp_path)


@pytest.mark.parametrize("probe", ALL_PROBES)
def test_file_mutations_change_the_file_system(bins: Bins, probe: str, tmp_path: Path) -> None:
    probe_path = bins(probe)
    target = tmp_path / "note.txt"
    assert run(probe_path, "write", target, "first version").returncode == 0
    assert run(probe_path, "write", target, "second").returncode == 0
    assert target.read_text() == "second"  # O_TRUNC
    assert run(probe_path, "append", target, " + more").returncode == 0
    assert target.read_text() == "second + more"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644 & ~current_umask()

    renamed = tmp_path / "renamed.txt"
    assert run(probe_path, "rename", target, renamed).returncode == 0
    assert not target.exists()
    assert renamed.read_text() == "second + more"
    assert run(probe_path, "unlink", renamed).returncode == 0
    assert not renamed.exists()

    directory = tmp_path / "dir"
    assert run(probe_path, "mkdir", directory).returncode == 0
    assert directory.is_dir()
    assert_failed_with(run(probe_path, "mkdir", directory), errno.EEXIST, "mkdir", directory)
    assert_failed_with(run(probe_path, "unlink", directory), errno.EISDIR, "unlink", directory)
    assert run(probe_path, "rmdir", directory).returncode == 0
    assert not directory.exists()
    assert_failed_with(
        run(probe_path, "write", directory / "x", "y"), errno.ENOENT, "write", directory / "x"
    )


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("probe", ALL_PROBES)
def test_cwd_and_relative_open_after_chdir(bins: Bins, probe: str, tmp_path: Path) -> None:
    assert output_lines(run(bins(probe), "cwd", cwd=tmp_path)) == [str(tmp_path)]
    (tmp_path / "inner").mkdir()
    (tmp_path / "inner" / "data").write_text("relative content\n")
    result = run(bins(probe), "chdir-cat", tmp_path / "inner", "data", cwd="/")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"relative content\n"


# ---- environment and processes ----


@pytest.mark.parametrize("probe", ALL_PROBES)
def test_env_and_envall_show_the_environment_given(bins: Bins, probe: str) -> None:
    environment = {"PROBE_VALUE": "spaces and = signs", "SECOND": "", "PATH": "/usr/bin:/bin"}
    found = run(bins(probe), "env", "PROBE_VALUE", env=environment)
    assert output_lines(found) == ["spaces and = signs"]
    missing = run(bins(probe), "env", "NOT_SET_ANYWHERE", env=environment)
    assert (missing.returncode, missing.stdout) == (1, b"")
    everything = run(bins(probe), "envall", env=environment)
    assert output_lines(everything) == [f"{key}={value}" for key, value in environment.items()]


@pytest.mark.parametrize("probe", ALL_PROBES)
@pytest.mark.parametrize("status", [0, 3, 255])
def test_exit_status_is_passed_through(bins: Bins, probe: str, status: int) -> None:
    assert run(bins(probe), "exit", str(status)).returncode == status


def ignore_sigusr1() -> None:
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)


@pytest.mark.parametrize("probe", C_PROBES)
@pytest.mark.parametrize(
    ("spelling", "expected"),
    [("TERM", signal.SIGTERM), ("SIGUSR1", signal.SIGUSR1), ("9", signal.SIGKILL)],
)
def test_raise_kills_a_c_probe_with_that_signal(
    bins: Bins, probe: str, spelling: str, expected: signal.Signals
) -> None:
    # SIGUSR1 is ignored by the parent (inherited across exec); raise must still die by it.
    result = run(bins(probe), "raise", spelling, preexec_fn=ignore_sigusr1)
    assert result.returncode == -expected


@pytest.mark.parametrize("sig", ["TERM", "HUP", "KILL"])
def test_raise_kills_probe_go_with_that_signal(bins: Bins, sig: str) -> None:
    result = run(bins("probe-go"), "raise", sig)
    assert result.returncode == -signal.Signals[f"SIG{sig}"]


@pytest.mark.parametrize("probe", ALL_PROBES)
def test_echo_stdin_copies_everything(bins: Bins, probe: str) -> None:
    payload = os.urandom(300_000)
    result = run(bins(probe), "echo-stdin", input=payload)
    assert result.returncode == 0, result.stderr
    assert result.stdout == payload


@pytest.mark.parametrize("probe", [*C_PROBES, "probe-go"])
def test_fork_exec_returns_the_childs_status(bins: Bins, probe: str, tmp_path: Path) -> None:
    child = bins("probe-musl")
    assert run(bins(probe), "fork-exec", child, "exit", "7").returncode == 7
    assert run(bins(probe), "fork-exec", child, "raise", "TERM").returncode == 128 + 15
    printed = run(bins(probe), "fork-exec", child, "cwd", cwd=tmp_path)
    assert printed.stdout.decode() == f"{tmp_path}\n"
    assert run(bins(probe), "fork-exec", tmp_path / "not-a-program").returncode == 127


# ---- loops used by benchmarks and concurrency tests ----


@pytest.mark.parametrize("probe", ALL_PROBES)
def test_openloop_opens_n_times(bins: Bins, probe: str, tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.touch()
    assert output_lines(run(bins(probe), "openloop", "5000", target)) == ["total=5000"]
    assert output_lines(run(bins(probe), "openloop", "0", target)) == ["total=0"]
    assert_failed_with(
        run(bins(probe), "openloop", "3", tmp_path / "gone"),
        errno.ENOENT,
        "openloop",
        tmp_path / "gone",
    )


@pytest.mark.parametrize("probe", C_PROBES)
def test_getppid_loop_reports_our_pid(bins: Bins, probe: str) -> None:
    assert output_lines(run(bins(probe), "getppid", "1000")) == [f"total=1000 ppid={os.getpid()}"]


@pytest.mark.parametrize("probe", C_PROBES)
def test_threads_all_complete(bins: Bins, probe: str, tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.touch()
    result = run(bins(probe), "threads", "16", "500", target)
    assert output_lines(result) == ["total=8000"]
    failed = run(bins(probe), "threads", "4", "10", tmp_path / "gone")
    assert failed.returncode == errno.ENOENT
    assert output_lines(failed) == ["total=0"]


def test_statloop_and_goroutines_count_every_call(bins: Bins, tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.touch()
    probe_go = bins("probe-go")
    assert output_lines(run(probe_go, "statloop", "1001", "4", target)) == ["total=1001"]
    assert output_lines(run(probe_go, "statloop", "0", "4", target)) == ["total=0"]
    # The concurrency shape other tests use under the tracer: 64 goroutines x 1000 rounds.
    assert output_lines(run(probe_go, "goroutines", "64", "1000", target)) == ["total=64000"]
    failed = run(probe_go, "goroutines", "8", "10", tmp_path / "gone")
    assert failed.returncode == errno.ENOENT
    assert output_lines(failed) == ["total=0"]


# ---- network ----


@pytest.mark.parametrize("probe", ALL_PROBES)
def test_resolve_uses_the_hosts_file_and_literals(bins: Bins, probe: str) -> None:
    expected_localhost = {
        info[4][0] for info in socket.getaddrinfo("localhost", None, type=socket.SOCK_STREAM)
    }
    localhost = run(bins(probe), "resolve", "localhost")
    assert localhost.returncode == 0, localhost.stderr
    assert set(output_lines(localhost)) == expected_localhost
    assert output_lines(run(bins(probe), "resolve", "192.0.2.7")) == ["192.0.2.7"]


@contextmanager
def bound_but_not_listening() -> Iterator[int]:
    """A port that refuses connections for as long as the context lasts (no reuse race)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.mark.parametrize("probe", C_PROBES)
def test_connect_reports_success_or_the_errno_name(bins: Bins, probe: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        result = run(bins(probe), "connect", "127.0.0.1", str(port))
        assert (result.returncode, output_lines(result)) == (0, ["connected"])
    with bound_but_not_listening() as port:
        refused = run(bins(probe), "connect", "127.0.0.1", str(port))
        assert (refused.returncode, output_lines(refused)) == (errno.ECONNREFUSED, ["ECONNREFUSED"])


def test_go_dial_prints_both_ends(bins: Bins) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        result = run(bins("probe-go"), "dial", f"127.0.0.1:{port}")
        _, peer = server.accept()
        assert result.returncode == 0, result.stderr
        assert output_lines(result) == [f"local=127.0.0.1:{peer[1]} remote=127.0.0.1:{port}"]
    with bound_but_not_listening() as port:
        refused = run(bins("probe-go"), "dial", f"127.0.0.1:{port}")
        assert (refused.returncode, output_lines(refused)) == (errno.ECONNREFUSED, ["ECONNREFUSED"])


class PathEchoHandler(http.server.BaseHTTPRequestHandler):
    """Answers /missing with 404 and any other path with a body derived from the path."""

    def do_GET(self) -> None:
        body = hashlib.sha256(self.path.encode()).hexdigest().encode() * 1000
        self.send_response(404 if self.path == "/missing" else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def http_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), PathEchoHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize("probe", ALL_PROBES)
def test_http_get_prints_the_body(bins: Bins, probe: str) -> None:
    with http_server() as port:
        result = run(bins(probe), "http-get", f"http://localhost:{port}/some/path?q=1")
        assert result.returncode == 0, result.stderr
        assert result.stdout == hashlib.sha256(b"/some/path?q=1").hexdigest().encode() * 1000
        missing = run(bins(probe), "http-get", f"http://127.0.0.1:{port}/missing")
        assert missing.returncode == 1
        assert missing.stdout == hashlib.sha256(b"/missing").hexdigest().encode() * 1000


@contextmanager
def serving(command: list[str]) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """Starts a probe server on port 0 and yields it with the port it announced."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        announcement = process.stdout.readline()
        match = re.fullmatch(r"listening (\d+)\n", announcement)
        assert match, f"unexpected announcement {announcement!r}"
        yield process, int(match.group(1))
    finally:
        process.kill()
        process.wait(timeout=TIMEOUT)
        if process.stdout:
            process.stdout.close()


def fetch(url: str, data: bytes | None = None) -> bytes:
    with urllib.request.urlopen(url, data=data, timeout=TIMEOUT) as response:
        return response.read()


@pytest.mark.parametrize("probe", C_PROBES)
def test_c_serve_answers_and_logs_each_request(bins: Bins, probe: str) -> None:
    with serving([str(bins(probe)), "serve", "0", "2"]) as (server, port):
        for path in ("/first", "/second?x=1"):
            body = fetch(f"http://127.0.0.1:{port}{path}")
            assert body == f"hello from probe\nGET {path} HTTP/1.1\n".encode()
        assert server.wait(timeout=TIMEOUT) == 0  # COUNT=2 requests served
        assert server.stdout is not None
        lines = server.stdout.read().splitlines()
        # Each connection is logged with its peer (this test's own client on loopback).
        assert [line.split(":")[0] for line in lines[0::2]] == ["peer 127.0.0.1"] * 2
        assert lines[1::2] == ["request GET /first HTTP/1.1", "request GET /second?x=1 HTTP/1.1"]


def test_go_serve_answers_get_and_hashes_post_bodies(bins: Bins) -> None:
    with serving([str(bins("probe-go")), "serve", "127.0.0.1:0"]) as (_, port):
        assert fetch(f"http://127.0.0.1:{port}/") == b"hello from probe-go\nGET / HTTP/1.1\n"
        payload = os.urandom(100_000)
        answer = fetch(f"http://127.0.0.1:{port}/upload", data=payload)
        assert answer == f"sha256={hashlib.sha256(payload).hexdigest()} length=100000\n".encode()


# ---- go run and shell scripts ----


def test_go_run_module_runs_offline(tmp_path: Path) -> None:
    data = tmp_path / "data.txt"
    data.write_text("file read by go run\n")
    environment = offline_go_environment(BIN_DIR.parent) | {"GREETING": "hello there"}
    result = subprocess.run(
        ["go", "run", ".", str(data)],
        cwd=ROOT / "examples" / "go-run-module",
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f'go-run-module args=["{data}"] GREETING=hello there\nfile read by go run\n'
    )


@pytest.mark.parametrize("status", [0, 5])
def test_spawn_script_spawns_children_and_exits_with_status(
    bins: Bins, status: int, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.write_text("read by a grandchild\n")
    result = run(bins("spawn.sh"), str(status), data)
    assert result.returncode == status, result.stderr
    assert output_lines(result) == [
        "subshell ok",
        "command-substitution ok",
        "pipeline lines=3",
        "background status=7",
        "read by a grandchild",
        f"exit {status}",
    ]


def test_busybox_copy_runs_applets(bins: Bins, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("busybox reads this\n")
    result = run(bins("busybox"), "cat", tmp_path / "file")
    assert (result.returncode, result.stdout) == (0, b"busybox reads this\n")
