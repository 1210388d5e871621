"""Reading the pod's files: static Go, static and dynamic C, musl, busybox and Python programs
under `exec --target pid/<sandbox target>` see the pod's files, not the host's.

The pod is the sandbox (a real chrooted process); the host has no /app at all, so every /app
file a program shows came from the pod. Expected values are read from the pod's root directory
on the host, never written down here.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mirrord_trace.fs.agent_descriptors import SHARE_ENV
from tests.conftest import ROOT, example_binary

MIRRORD_TRACE = str(ROOT / ".venv" / "bin" / "mirrord-trace")
PROBES = ["probe-static", "probe-musl", "probe-dynamic", "probe-go"]
SYSTEM_PYTHON = "/usr/bin/python3"


def traced(
    sandbox,
    *argv: str,
    options: tuple[str, ...] = (),
    config: dict | None = None,
    tmp_path: Path | None = None,
    env: dict[str, str] | None = None,
    input: bytes | None = None,
) -> subprocess.CompletedProcess:
    """`mirrord-trace exec --target pid/<pod> [options] -- argv`."""
    command = [MIRRORD_TRACE, "exec", "--target", f"pid/{sandbox.target_pid}", *options]
    if config is not None:
        assert tmp_path is not None
        file = tmp_path / "mirrord.json"
        file.write_text(json.dumps(config))
        command += ["-f", str(file)]
    return subprocess.run(
        [*command, "--", *argv], capture_output=True, timeout=120, env=env, input=input
    )


def probe(name: str) -> str:
    return str(example_binary(name))


def pod_file(sandbox, path: str) -> Path:
    return sandbox.pod_path(path)


@pytest.fixture(autouse=True)
def _host_has_no_app() -> None:
    # The tests tell the pod's files from the host's by /app existing only in the pod.
    assert not os.path.exists("/app"), "this machine has an /app: the fs tests need it absent"


@pytest.mark.parametrize("binary", PROBES)
def test_reads_stats_and_lists_the_pods_files(sandbox, binary: str) -> None:
    config = traced(sandbox, probe(binary), "cat", "/app/config.yaml")
    assert config.returncode == 0, config.stderr
    assert config.stdout == pod_file(sandbox, "/app/config.yaml").read_bytes()

    info = os.stat(pod_file(sandbox, "/app/config.yaml"))
    shown = traced(sandbox, probe(binary), "stat", "/app/config.yaml")
    assert shown.stdout.decode().split() == [
        f"size={info.st_size}",
        f"mode=0{stat.S_IMODE(info.st_mode):o}",
        "type=regular",
        f"nlink={info.st_nlink}",
        f"ino={info.st_ino}",
    ]

    listing = traced(sandbox, probe(binary), "ls", "/app")
    assert listing.stdout.decode().splitlines() == sorted(os.listdir(pod_file(sandbox, "/app")))


@pytest.mark.parametrize("binary", PROBES)
def test_symlinks_are_followed_inside_the_pod(sandbox, binary: str) -> None:
    # /app/config-link.yaml -> /app/config.yaml: an absolute link, meaningless on the host.
    link = "/app/config-link.yaml"
    followed = traced(sandbox, probe(binary), "cat", link)
    assert followed.stdout == pod_file(sandbox, "/app/config.yaml").read_bytes()
    text = traced(sandbox, probe(binary), "readlink", link)
    assert text.stdout.decode().strip() == os.readlink(pod_file(sandbox, link))
    not_followed = traced(sandbox, probe(binary), "lstat", link)
    assert "type=symlink" in not_followed.stdout.decode()
    # A relative link to a directory, then a file below it.
    through = traced(sandbox, probe(binary), "cat", "/app/current/greeting.txt")
    assert through.stdout == pod_file(sandbox, "/app/data/greeting.txt").read_bytes()


@pytest.mark.parametrize("share", ["1", "0"], ids=["agent-descriptor", "streamed"])
@pytest.mark.parametrize("binary", PROBES)
def test_file_larger_than_the_inline_limit_reads_whole(sandbox, binary: str, share: str) -> None:
    # "streamed" is what an agent on another machine does: the content crosses the connection.
    env = {**os.environ, SHARE_ENV: share}
    out = traced(sandbox, probe(binary), "cat", sandbox.large_file, env=env)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout) == sandbox.large_file_size
    assert hashlib.sha256(out.stdout).hexdigest() == sandbox.large_file_sha256


def test_busybox_cat_ls_stat(sandbox) -> None:
    busybox = probe("busybox")
    cat = traced(sandbox, busybox, "cat", "/app/data/greeting.txt")
    assert cat.stdout == pod_file(sandbox, "/app/data/greeting.txt").read_bytes()
    ls = traced(sandbox, busybox, "ls", "-1a", "/app/data")
    assert ls.stdout.decode().split() == sorted(
        [".", "..", *os.listdir(pod_file(sandbox, "/app/data"))]
    )
    long = traced(sandbox, busybox, "ls", "-l", "/app")
    assert "config-link.yaml -> /app/config.yaml" in long.stdout.decode()
    info = os.stat(pod_file(sandbox, "/app/config.yaml"))
    shown = traced(sandbox, busybox, "stat", "-c", "%s %a %i %u %Y", "/app/config.yaml")
    assert shown.stdout.decode().split() == [
        str(info.st_size),
        f"{stat.S_IMODE(info.st_mode):o}",
        str(info.st_ino),
        str(info.st_uid),
        str(int(info.st_mtime)),
    ]
    digest = traced(sandbox, busybox, "sha256sum", sandbox.large_file)
    assert digest.stdout.decode().split()[0] == sandbox.large_file_sha256


def test_chdir_into_the_pod_resolves_relative_paths_there(sandbox) -> None:
    script = "cd /app/data && pwd -P && cat greeting.txt && ls && cd items && cat ../latest"
    out = traced(sandbox, probe("busybox"), "sh", "-c", script)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.decode().splitlines()
    greeting = pod_file(sandbox, "/app/data/greeting.txt").read_text().strip()
    latest = pod_file(sandbox, "/app/data/latest").read_text().strip()
    assert lines == [
        "/app/data", greeting, *sorted(os.listdir(pod_file(sandbox, "/app/data"))), latest
    ]
    for binary in ("probe-static", "probe-go"):
        # /app/current is a symlink to data: the pod decides where it leads.
        chdir = traced(sandbox, probe(binary), "chdir-cat", "/app/current", "greeting.txt")
        assert chdir.stdout.decode().strip() == greeting


PYTHON_DIRFD_SCRIPT = """
import json, os
fd = os.open("/app", os.O_RDONLY | os.O_DIRECTORY)
result = {"listing": sorted(os.listdir(fd))}
result["size"] = os.stat("config.yaml", dir_fd=fd).st_size
result["lsize"] = os.stat("config-link.yaml", dir_fd=fd, follow_symlinks=False).st_size
opener = lambda path, flags: os.open(path, flags, dir_fd=fd)
result["greeting"] = open("data/greeting.txt", opener=opener).read()
result["link"] = os.readlink("config-link.yaml", dir_fd=fd)
os.fchdir(fd)
result["cwd"] = os.getcwd()
result["relative"] = open("current/greeting.txt").read()
result["readable"] = os.access("config.yaml", os.R_OK)
result["missing"] = os.path.exists("nothing-here")
print(json.dumps(result))
"""


def test_dynamic_python_uses_dirfds_and_fchdir(sandbox) -> None:
    out = traced(sandbox, SYSTEM_PYTHON, "-c", PYTHON_DIRFD_SCRIPT)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    app = pod_file(sandbox, "/app")
    assert result == {
        "listing": sorted(os.listdir(app)),
        "size": (app / "config.yaml").stat().st_size,
        "lsize": len(os.readlink(app / "config-link.yaml")),
        "greeting": (app / "data/greeting.txt").read_text(),
        "link": os.readlink(app / "config-link.yaml"),
        "cwd": "/app",
        "relative": (app / "data/greeting.txt").read_text(),
        "readable": True,
        "missing": False,
    }


@pytest.mark.parametrize("binary", ["probe-static", "probe-go"])
def test_fs_mode_local_sees_the_hosts_files(sandbox, binary: str) -> None:
    remote = traced(sandbox, probe(binary), "cat", "/etc/hostname")
    assert remote.stdout == pod_file(sandbox, "/etc/hostname").read_bytes()
    local = traced(sandbox, probe(binary), "cat", "/etc/hostname", options=("--fs-mode", "local"))
    assert local.stdout == Path("/etc/hostname").read_bytes()
    assert local.stdout != remote.stdout
    missing = traced(sandbox, probe(binary), "ls", "/app", options=("--fs-mode", "local"))
    assert missing.returncode == 2  # ENOENT: the host has no /app


def test_missing_remote_files_and_wrong_types_fail_like_the_kernel(sandbox) -> None:
    missing = traced(sandbox, probe("probe-static"), "cat", "/app/no-such-file")
    assert missing.returncode == 2  # ENOENT
    directory = traced(sandbox, probe("probe-static"), "cat", "/app/data")
    assert directory.returncode == 21  # EISDIR, from read() on the directory
    not_dir = traced(sandbox, probe("probe-static"), "ls", "/app/config.yaml")
    assert not_dir.returncode == 20  # ENOTDIR


def test_not_found_patterns_give_enoent(sandbox, tmp_path: Path) -> None:
    # The user's own not_found list.
    config = {"feature": {"fs": {"not_found": ["^/app/data/"]}}}
    hidden = traced(
        sandbox, probe("probe-go"), "cat", "/app/data/greeting.txt", config=config,
        tmp_path=tmp_path,
    )
    assert hidden.returncode == 2, hidden.stderr
    # The default list: ~/.kube of whoever runs mirrord-trace, though it exists on the host.
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    (home / ".kube" / "config").write_text("apiVersion: v1\n")
    env = {**os.environ, "HOME": str(home)}
    kube = traced(sandbox, probe("probe-static"), "cat", str(home / ".kube/config"), env=env)
    assert kube.returncode == 2, kube.stderr
    plain = subprocess.run([probe("probe-static"), "cat", str(home / ".kube/config")],
                           capture_output=True, timeout=30)
    assert plain.stdout == b"apiVersion: v1\n"


def test_local_and_read_only_overrides(sandbox, tmp_path: Path) -> None:
    local = traced(
        sandbox, probe("probe-static"), "cat", "/etc/hostname",
        config={"feature": {"fs": {"local": ["^/etc/hostname$"]}}}, tmp_path=tmp_path,
    )
    assert local.stdout == Path("/etc/hostname").read_bytes()
    # localwithoverrides: local, except the default remote list and the user's read_only.
    config = {"feature": {"fs": {"mode": "localwithoverrides", "read_only": ["^/app/data/"]}}}
    for path, expected in [
        ("/app/data/greeting.txt", pod_file(sandbox, "/app/data/greeting.txt").read_bytes()),
        ("/etc/hostname", pod_file(sandbox, "/etc/hostname").read_bytes()),
    ]:
        out = traced(sandbox, probe("probe-go"), "cat", path, config=config, tmp_path=tmp_path)
        assert out.stdout == expected, (path, out.stderr)
    outside = traced(
        sandbox, probe("probe-go"), "cat", "/app/config.yaml", config=config, tmp_path=tmp_path
    )
    assert outside.returncode == 2  # local, and the host has no /app


def test_trace_names_the_rule_for_each_path(sandbox) -> None:
    out = traced(
        sandbox, probe("probe-static"), "cat", "/app/config.yaml", "/etc/hostname",
        "/root/.kube/x", options=("--trace", "-"),
    )
    lines = out.stderr.decode().splitlines()

    def line_for(path: str) -> str:
        return next(line for line in lines if f'"{path}"' in line)

    assert "[remote: fs mode read]" in line_for("/app/config.yaml")
    assert "[remote: default remote pattern ^/etc/hostname$]" in line_for("/etc/hostname")
    home = os.path.expanduser("~")
    if home == "/root":
        assert "[not found: default not_found pattern" in line_for("/root/.kube/x")
    assert "[local: default local pattern ^/proc(/|$)]" in line_for("/proc/self/exe")


ROUND_TRIP_CHILD = """
import json, os, sys
from mirrord_trace.config import parse_config
from mirrord_trace.local_target import LocalAgent
from mirrord_trace.supervisor import run

# Go's runtime calls uname at start-up, which reads the target's host name once
# (feature.hostname): off here, so that only file requests are counted.
config = parse_config({"feature": {"hostname": False}})

target, argv = int(sys.argv[1]), sys.argv[2:]
with LocalAgent(target) as client:
    with open(os.devnull, "wb") as devnull:
        saved = os.dup(1)
        os.dup2(devnull.fileno(), 1)
        try:
            code = run(argv, env=dict(os.environ), agent=client, config=config)
        finally:
            os.dup2(saved, 1)
    counts = client.request("stats")["session"]
counts.pop("stats")
print(json.dumps({"code": code, "requests": counts}))
"""


def round_trips(sandbox, *argv: str) -> dict[str, int]:
    """The agent requests one traced run made (through a fresh supervisor and agent)."""
    out = subprocess.run(
        [sys.executable, "-c", ROUND_TRIP_CHILD, str(sandbox.target_pid), *argv],
        capture_output=True, timeout=120, cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["code"] == 0
    return result["requests"]


@pytest.mark.parametrize("binary", ["probe-static", "probe-go"])
def test_one_round_trip_to_read_a_small_file_and_one_to_stat(sandbox, binary: str) -> None:
    assert round_trips(sandbox, probe(binary), "cat", "/app/config.yaml") == {"fs.open_read": 1}
    assert round_trips(sandbox, probe(binary), "stat", "/app/config.yaml") == {"fs.stat": 1}


def test_one_round_trip_for_access(sandbox) -> None:
    # The interpreter's own start-up reads local files only.
    script = "import os, sys; sys.exit(0 if os.access('/app/config.yaml', os.R_OK) else 1)"
    assert round_trips(sandbox, SYSTEM_PYTHON, "-c", script) == {"fs.access": 1}


def test_a_large_file_from_a_local_agent_crosses_no_connection(sandbox) -> None:
    # The agent's descriptor is duplicated: the open, and closing the agent's own handle.
    requests = round_trips(sandbox, probe("probe-static"), "cat", sandbox.large_file)
    assert requests == {"fs.open_read": 1, "fs.close": 1}


def test_fstat_of_an_opened_pod_file_matches_stat_of_its_path(sandbox) -> None:
    script = """
import json, os
result = {}
for path in ("/app/config.yaml", "/app/data"):
    fd = os.open(path, os.O_RDONLY)
    by_fd, by_path = os.fstat(fd), os.stat(path)
    result[path] = [os.path.samestat(by_fd, by_path), by_fd.st_ino, by_fd.st_size]
print(json.dumps(result))
"""
    out = traced(sandbox, SYSTEM_PYTHON, "-c", script)
    assert out.returncode == 0, out.stderr
    for path, (same, ino, size) in json.loads(out.stdout).items():
        info = os.stat(pod_file(sandbox, path))
        assert (same, ino, size) == (True, info.st_ino, info.st_size), path


@pytest.mark.parametrize("binary", ["probe-static", "probe-musl"])
def test_remote_stats_and_opens_under_a_busy_timer(sandbox, binary: str) -> None:
    """A SIGALRM handler without SA_RESTART fires every 200 us while the program stats the
    pod's file (answered through seccomp notifications) and opens it (rewritten at ptrace
    stops) 600 times each: every call succeeds, none sees EINTR, as natively."""
    out = traced(sandbox, probe(binary), "stat-signals", "600", "/app/config.yaml")
    assert out.returncode == 0, out.stderr
    counts = dict(field.split("=") for field in out.stdout.decode().split())
    assert int(counts["signals"]) > 0
    assert (counts["calls"], counts["eintr"]) == ("1200", "0")
