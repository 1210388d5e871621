"""Features behind mirrord keys that act on the program's calls, against a real target (a
process in its own network namespace and chroot, see tests/test_agent_support.py):
feature.hostname, skip_processes / skip_build_tools, feature.network.ipv6 false,
feature.fs.mapping."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_agent_support import Target, running_target

LOCAL_HOSTNAME = socket.gethostname()


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    with running_target() as running:
        yield running


def run(target: Target, *program: str, config: dict | None = None, flags: tuple[str, ...] = (),
        tmp: Path | None = None) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "mirrord_trace", "exec", "-t", f"pid/{target.pid}", *flags]
    if config is not None:
        assert tmp is not None
        path = tmp / "mirrord.json"
        path.write_text(json.dumps(config))
        args += ["-f", str(path)]
    return subprocess.run([*args, "--", *program], capture_output=True, text=True, timeout=120)


def test_the_program_sees_the_targets_host_name(target: Target, tmp_path: Path) -> None:
    assert LOCAL_HOSTNAME != "target-host"
    result = run(target, "uname", "-n")
    assert (result.returncode, result.stdout) == (0, "target-host\n"), result.stderr
    result = run(target, sys.executable, "-c", "import socket; print(socket.gethostname())")
    assert result.stdout == "target-host\n", result.stderr
    result = run(target, "uname", "-n", config={"feature": {"hostname": False}}, tmp=tmp_path)
    assert result.stdout == f"{LOCAL_HOSTNAME}\n", result.stderr


LOCAL_HOSTNAME_FILE = Path("/etc/hostname").read_text()
BOTH = 'cat /etc/hostname; "$0" /etc/hostname'


def test_skipped_processes_run_untouched_and_their_children_do_not(
    target: Target, tmp_path: Path
) -> None:
    assert LOCAL_HOSTNAME_FILE != "target-host\n"
    # head is skipped: it reads this machine's /etc/hostname; cat, beside it, the target's.
    result = run(target, "sh", "-c", BOTH, "head", flags=("--skip-processes", "head"))
    assert result.stdout == "target-host\n" + LOCAL_HOSTNAME_FILE, result.stderr
    # A skipped shell's children are judged on their own: cat is not skipped.
    result = run(target, "sh", "-c", "cat /etc/hostname", config={"skip_processes": ["sh"]},
                 tmp=tmp_path)  # fmt: skip
    assert result.stdout == "target-host\n", result.stderr


def test_build_tools_are_skipped_unless_told_not_to(target: Target, tmp_path: Path) -> None:
    tools = tmp_path / "bin"
    tools.mkdir()
    for name in ("cc", "mytool"):
        shutil.copy("/bin/cat", tools / name)
    cc, mytool = str(tools / "cc"), str(tools / "mytool")
    result = run(target, "sh", "-c", BOTH, cc)
    assert result.stdout == "target-host\n" + LOCAL_HOSTNAME_FILE, result.stderr
    result = run(target, "sh", "-c", BOTH, cc, config={"skip_build_tools": False}, tmp=tmp_path)
    assert result.stdout == "target-host\ntarget-host\n", result.stderr
    result = run(target, "sh", "-c", BOTH, mytool, config={"skip_extra_build_tools": "mytool"},
                 tmp=tmp_path)  # fmt: skip
    assert result.stdout == "target-host\n" + LOCAL_HOSTNAME_FILE, result.stderr


IPV6 = (
    "import socket\ntry:\n socket.socket(socket.AF_INET6)\n print('v6')\n"
    "except OSError as e:\n print(e.errno)\nsocket.socket(socket.AF_INET); print('v4')"
)


def test_ipv6_off_refuses_ipv6_sockets(target: Target, tmp_path: Path) -> None:
    import errno

    result = run(target, sys.executable, "-c", IPV6)
    assert result.stdout == "v6\nv4\n", result.stderr
    config = {"feature": {"network": {"ipv6": False}}}
    result = run(target, sys.executable, "-c", IPV6, config=config, tmp=tmp_path)
    assert result.stdout == f"{errno.EAFNOSUPPORT}\nv4\n", result.stderr
    # Also without a target (nothing else is trapped for it).
    path = tmp_path / "mirrord.json"
    targetless = subprocess.run(
        [sys.executable, "-m", "mirrord_trace", "exec", "-f", str(path), "--", sys.executable,
         "-c", IPV6], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert targetless.stdout == f"{errno.EAFNOSUPPORT}\nv4\n", targetless.stderr


def test_a_process_is_judged_again_when_it_executes_a_program() -> None:
    from mirrord_trace.skipped_processes import BUILD_TOOLS, SkippedProcesses, skipped_names

    assert {"go", "cargo", "rustc", "gcc", "git"} <= BUILD_TOOLS
    assert skipped_names(["node"], False, ["bazel"]) == {"node"}
    assert skipped_names([], True, ["bazel"]) == BUILD_TOOLS | {"bazel"}
    names = {100: ("sh", "sh")}
    skipper = SkippedProcesses(frozenset({"go"}), names_of=lambda tgid: names[tgid])
    calls = []
    handler = skipper.wrap(lambda call: calls.append(call.tgid) or "decided", execs=False)
    execve = skipper.wrap(lambda call: "exec decided", execs=True)

    class Call:
        tgid = 100

    assert handler(Call()) == "decided"
    assert execve(Call()) == "exec decided"  # sh executes go: sh's own execve is decided
    names[100] = ("go", "go")
    assert handler(Call()) is None  # now go: its calls run as they are
    assert execve(Call()) is None  # go's execve of the program it built runs as it is
    names[100] = ("server", "./server")
    assert handler(Call()) == "decided"
    assert calls == [100, 100]


def test_fs_mapping_rewrites_paths_locally_and_remotely(target: Target, tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "settings.txt").write_text("local settings\n")
    (real / "sub").mkdir()
    config = {
        "feature": {
            "fs": {
                "mapping": {
                    "^/srv/(?<app>[a-z]+)/config/(.+)$": f"{real}/$2",
                    "^/mapped/hostname$": "/etc/hostname",
                }
            }
        }
    }
    script = (
        "cat /srv/shop/config/settings.txt /mapped/hostname; "
        "test -e /srv/shop/config/settings.txt && echo exists; cd /srv/x/config/sub && pwd -P"
    )
    result = run(target, "sh", "-c", script, config=config, tmp=tmp_path)
    # A local file under its mapped name; the target's /etc/hostname (a default remote path).
    assert result.stdout == f"local settings\ntarget-host\nexists\n{real}/sub\n", result.stderr
    # Without a target too.
    path = tmp_path / "targetless.json"
    path.write_text(json.dumps(config))
    targetless = subprocess.run(
        [sys.executable, "-m", "mirrord_trace", "exec", "-f", str(path), "--", "cat",
         "/srv/shop/config/settings.txt"], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert targetless.stdout == "local settings\n", targetless.stderr


def test_fs_mapping_replacements_are_mirrords() -> None:
    from mirrord_trace.config import ConfigError, parse_config
    from mirrord_trace.handlers.fs_mapping import mapped_path

    fs = parse_config(
        {"feature": {"fs": {"mapping": {
            "^/home/(?<user>[^/]+)/dev/(.*)$": "/opt/${user}/$2",
            r"\.cfg$": ".cfg.$$",
        }}}}
    ).feature.fs  # fmt: skip
    assert mapped_path(fs.mapping, "/home/ann/dev/a/b") == "/opt/ann/a/b"
    assert mapped_path(fs.mapping, "/etc/app.cfg") == "/etc/app.cfg.$"
    assert mapped_path(fs.mapping, "/etc/hosts") is None
    with pytest.raises(ConfigError, match="names group '3', which the regex lacks"):
        parse_config({"feature": {"fs": {"mapping": {"^/(a)/(b)": "/$3"}}}})


UNIX_CLIENT = """
import socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    sock.connect("/mirrord-test-app.sock")
except OSError as error:
    print("error", error.errno); sys.exit(0)
sock.sendall(b"ping"); sock.shutdown(socket.SHUT_WR)
print(sock.recv(100).decode())
"""


def test_unix_streams_connect_to_the_targets_socket(target: Target, tmp_path: Path) -> None:
    import errno
    import threading

    path = target.root / "mirrord-test-app.sock"  # /mirrord-test-app.sock in the target
    assert not Path("/mirrord-test-app.sock").exists()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(4)

    def serve() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            with connection:
                connection.sendall(b"pong from the target to " + connection.recv(100))

    threading.Thread(target=serve, daemon=True).start()
    try:
        config = {"feature": {"network": {"outgoing": {"unix_streams": r"app\.sock$"}}}}
        result = run(target, sys.executable, "-c", UNIX_CLIENT, config=config, tmp=tmp_path)
        assert result.stdout == "pong from the target to ping\n", result.stderr
        result = run(target, sys.executable, "-c", UNIX_CLIENT)  # without: a local path
        assert result.stdout == f"error {errno.ENOENT}\n", result.stderr
    finally:
        server.close()
        path.unlink()


def test_unix_streams_cannot_leave_the_targets_root(target: Target, tmp_path: Path) -> None:
    import errno

    outside = target.base / "outside.sock"  # a socket outside the target's root
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(outside))
    server.listen(1)
    link = target.root / "mirrord-test-app.sock"
    link.symlink_to(outside)  # absolute: inside the root it names a path that does not exist
    try:
        config = {"feature": {"network": {"outgoing": {"unix_streams": r"app\.sock$"}}}}
        result = run(target, sys.executable, "-c", UNIX_CLIENT, config=config, tmp=tmp_path)
        assert result.stdout == f"error {errno.ENOENT}\n", result.stderr
    finally:
        link.unlink()
        server.close()
        outside.unlink()
