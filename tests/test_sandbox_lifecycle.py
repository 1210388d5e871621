"""Bringing sandboxes up and down: idempotent, complete, and robust to crashes and failures."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from ipaddress import ip_network
from pathlib import Path

import pytest

from mirrord_trace.sandbox import (
    SandboxError,
    SandboxExistsError,
    SandboxInfo,
    down,
    run_in_sandbox_netns,
    status,
    up,
)
from mirrord_trace.sandbox.plan import (
    LINK_BLOCK,
    SERVICE_BLOCK,
    host_veth_name,
    netns_name,
    state_dir,
)
from mirrord_trace.sandbox.state import exclusive_lock, load, names_with_state


def _cli(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "mirrord_trace.sandbox", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time) of pid, or None when there is no such process at all."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _live_processes_of(name: str) -> list[str]:
    """Live processes that belong to sandbox `name` by their command line or root directory
    (the machine is shared: other sessions run sandboxes and DNS servers of their own)."""
    directory = f"{state_dir(name)}/"
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or (_stat(int(entry)) or ("Z",))[0] == "Z":
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().decode().split("\0")
            root = os.readlink(f"/proc/{entry}/root")
        except OSError:
            continue
        if f"--sandbox={name}" in argv or any(directory in arg for arg in argv) or (
            f"{root}/".startswith(directory)
        ):
            found.append(f"{entry}: {' '.join(argv)}")
    return found


def _unclaimed_sandbox_routes() -> list[str]:
    """Routes in the sandbox address blocks whose index no sandbox state claims.

    Checked under the sandbox lock: state is written before routes exist and removed after they
    are gone, so between up/down runs every such route is claimed.
    """
    with exclusive_lock():
        claimed = {load(name).index for name in names_with_state()}
        routes = subprocess.run(["ip", "route"], capture_output=True, text=True).stdout
    unclaimed = []
    for line in routes.splitlines():
        for network in (LINK_BLOCK, SERVICE_BLOCK):
            destination = line.removeprefix("unreachable ").split()[0]
            if destination != "default" and ip_network(destination).subnet_of(network) and (
                int(destination.split(".")[2]) not in claimed
            ):
                unclaimed.append(line)
    return unclaimed


@dataclass
class Footprint:
    """What one sandbox puts on the machine, recorded while it is up."""

    name: str
    netns: str
    host_veth: str
    routes: tuple[str, ...]
    state_dir: Path
    processes: dict[int, int]  # pid -> start time

    @classmethod
    def of(cls, info: SandboxInfo) -> Footprint:
        processes = {}
        for pid in info.pids.values():
            found = _stat(pid)
            assert found is not None, f"sandbox process {pid} is missing while up"
            processes[pid] = found[1]
        routes = (
            f"{info.target_addr.rsplit('.', 1)[0]}.0/30",
            f"unreachable {info.service_addr.rsplit('.', 1)[0]}.0/24",
        )
        return cls(info.name, info.netns, info.host_veth, routes, info.state_dir, processes)

    def remains(self) -> list[str]:
        """Every trace of the sandbox still on the machine, found with tools other than ours."""
        found = []
        if self.netns in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                        text=True).stdout.split():  # fmt: skip
            found.append(f"network namespace {self.netns}")
        links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
        if f" {self.host_veth}:" in links or f" {self.host_veth}@" in links:
            found.append(f"link {self.host_veth}")
        routes = subprocess.run(["ip", "route", "show"], capture_output=True, text=True).stdout
        found += [f"route {route}" for route in self.routes if route in routes]
        found += [f"process {pid} ({_cmdline(str(pid))})" for pid in self.live_processes()]
        mounts = Path("/proc/self/mountinfo").read_text()
        if str(self.state_dir) in mounts or self.netns in mounts:
            found.append("a mount")
        if self.state_dir.exists():
            found.append(f"directory {self.state_dir}")
        return found

    def live_processes(self) -> list[int]:
        return [
            pid
            for pid, started in self.processes.items()
            if (state := _stat(pid)) and state[1] == started and state[0] != "Z"
        ]

    def zombies(self) -> list[int]:
        return [pid for pid, started in self.processes.items() if _stat(pid) == ("Z", started)]


def _kill_and_wait(pids: list[int]) -> None:
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while any((_stat(pid) or ("Z",))[0] != "Z" for pid in pids):
        assert time.monotonic() < deadline, "SIGKILLed processes did not die"
        time.sleep(0.01)


def test_up_then_down_leaves_nothing_behind(fresh_sandbox_name: str) -> None:
    info = up(fresh_sandbox_name)
    footprint = Footprint.of(info)
    # While up, every trace is there (so the checks below can fail): namespace, link, routes,
    # processes, the namespace's mount, the directory.
    assert len(footprint.remains()) == 2 + len(footprint.routes) + len(footprint.processes) + 2
    assert down(fresh_sandbox_name) is True
    assert footprint.remains() == []
    assert footprint.zombies() == [], "down must reap the processes this process started"
    assert status(fresh_sandbox_name) is None
    assert down(fresh_sandbox_name) is False


def test_down_from_another_process(fresh_sandbox_name: str) -> None:
    footprint = Footprint.of(up(fresh_sandbox_name))
    result = _cli("down", "--name", fresh_sandbox_name)
    assert result.returncode == 0, result.stderr
    assert footprint.remains() == []
    # The processes were this process's children: its next sandbox call collects them.
    assert status(fresh_sandbox_name) is None
    assert footprint.zombies() == []


def test_up_twice_keeps_the_running_sandbox(fresh_sandbox_name: str) -> None:
    info = up(fresh_sandbox_name)
    with pytest.raises(SandboxExistsError, match="already up"):
        up(fresh_sandbox_name)
    again = up(fresh_sandbox_name, exist_ok=True)
    assert (again.target_pid, again.app_secret) == (info.target_pid, info.app_secret)
    assert status(fresh_sandbox_name).healthy


def test_cli_up_twice_then_down_twice(fresh_sandbox_name: str) -> None:
    name = fresh_sandbox_name
    first = _cli("up", "--name", name)
    assert first.returncode == 0, first.stderr
    info = status(name)
    assert info is not None and info.healthy
    assert f"target pid {info.target_pid}" in first.stdout
    footprint = Footprint.of(info)

    second = _cli("up", "--name", name)
    assert second.returncode == 0
    assert f"already up (target pid {info.target_pid})" in second.stderr
    assert status(name).target_pid == info.target_pid

    removed = _cli("down", "--name", name)
    assert removed.returncode == 0, removed.stderr
    assert f"sandbox {name!r} removed" in removed.stdout
    # Started by a process that has exited, so reaping them is init's business, not ours.
    assert footprint.remains() == []

    again = _cli("down", "--name", name)
    assert again.returncode == 0
    assert "nothing to do" in again.stdout


def test_down_after_the_processes_were_killed(fresh_sandbox_name: str) -> None:
    info = up(fresh_sandbox_name)
    footprint = Footprint.of(info)
    _kill_and_wait(list(info.pids.values()))

    broken = status(fresh_sandbox_name)
    assert not broken.healthy
    assert {f"{role} process {pid} is not running" for role, pid in info.pids.items()} <= set(
        broken.problems
    )
    reported = _cli("status", "--name", fresh_sandbox_name)
    assert reported.returncode == 2
    assert "BROKEN" in reported.stdout

    assert down(fresh_sandbox_name) is True
    assert footprint.remains() == []
    assert footprint.zombies() == []


def test_down_after_up_itself_was_killed_half_way(fresh_sandbox_name: str) -> None:
    name = fresh_sandbox_name
    netns_path = Path("/run/netns") / netns_name(name)
    crashing = subprocess.Popen(
        [sys.executable, "-m", "mirrord_trace.sandbox", "up", "--name", name]
    )
    try:
        deadline = time.monotonic() + 30
        while not netns_path.exists():
            assert crashing.poll() is None and time.monotonic() < deadline, "up never got going"
            time.sleep(0.002)
        crashing.kill()
    finally:
        crashing.wait()
    left = status(name)
    assert left is not None, "the state must survive a crash, or down could not find the parts"
    if left.phase == "building":
        assert "its build did not finish" in left.problems

    assert down(name) is True
    assert netns_name(name) not in subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True).stdout  # fmt: skip
    assert host_veth_name(name) not in subprocess.run(
        ["ip", "-o", "link"], capture_output=True, text=True).stdout  # fmt: skip
    assert _unclaimed_sandbox_routes() == []
    assert _live_processes_of(name) == []
    assert not state_dir(name).exists()


def test_up_rebuilds_a_stale_sandbox(fresh_sandbox_name: str) -> None:
    info = up(fresh_sandbox_name)
    old = Footprint.of(info)
    _kill_and_wait([info.target_pid])
    notes: list[str] = []
    rebuilt = up(fresh_sandbox_name, report=notes.append)
    assert notes and "stale" in notes[0]
    assert rebuilt.healthy and rebuilt.target_pid != info.target_pid
    assert rebuilt.app_secret != info.app_secret
    assert old.live_processes() == []
    assert old.zombies() == []
    assert os.readlink(f"/proc/{rebuilt.target_pid}/root") == str(rebuilt.root)


def test_down_stops_every_process_in_the_pod(fresh_sandbox_name: str) -> None:
    info = up(fresh_sandbox_name)
    # Processes the sandbox did not start itself: one in its network namespace, one that
    # entered the target's namespaces and root.
    in_netns = subprocess.Popen(["nsenter", f"--net={info.netns_path}", "--", "sleep", "300"])
    in_target = subprocess.Popen(
        ["nsenter", f"--target={info.target_pid}", "--net", "--mount", "--root", "--wd", "--",
         "/bin/busybox", "sleep", "300"]
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 5
        while any(os.readlink(f"/proc/{p.pid}/ns/net") != os.readlink(
                f"/proc/{info.target_pid}/ns/net") for p in (in_netns, in_target)):  # fmt: skip
            assert time.monotonic() < deadline, "helpers did not enter the pod"
            time.sleep(0.01)
        down(fresh_sandbox_name)
        assert in_netns.wait(timeout=10) == -signal.SIGTERM
        assert in_target.wait(timeout=10) == -signal.SIGTERM
    finally:
        for helper in (in_netns, in_target):
            helper.kill()
            helper.wait()


def test_failed_up_removes_what_it_built(fresh_sandbox_name: str) -> None:
    # A firewall rule that rejects this one `up` process's connections to the app port: the
    # sandbox gets fully built, then the final reachability check fails.
    group = "54321"
    rule = ["OUTPUT", "-m", "owner", "--gid-owner", group, "-p", "tcp", "--dport", "8080",
            "-j", "REJECT", "--reject-with", "tcp-reset"]  # fmt: skip
    subprocess.run(["iptables", "-I", *rule], check=True)
    try:
        result = _cli("up", "--name", fresh_sandbox_name,
                      prefix=("setpriv", f"--regid={group}", "--clear-groups"))  # fmt: skip
    finally:
        subprocess.run(["iptables", "-D", *rule], check=True)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [message] = result.stderr.strip().splitlines()
    assert "cannot reach the target" in message and "what was built is removed" in message
    assert status(fresh_sandbox_name) is None
    assert netns_name(fresh_sandbox_name) not in subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True).stdout  # fmt: skip
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert host_veth_name(fresh_sandbox_name) not in links
    assert _unclaimed_sandbox_routes() == []
    assert _live_processes_of(fresh_sandbox_name) == []
    assert not state_dir(fresh_sandbox_name).exists()


@pytest.mark.parametrize(
    ("command", "bad_name"),
    [("up", "Upper"), ("status", "has_underscore"), ("down", "-leading"), ("up", "x" * 33),
     ("down", "")],
)  # fmt: skip
def test_bad_name_is_one_clear_error(command: str, bad_name: str) -> None:
    result = _cli(command, "--name", bad_name)
    assert result.returncode == 2
    assert "invalid sandbox name" in result.stderr
    assert "Traceback" not in result.stderr


def test_status_of_an_absent_sandbox(fresh_sandbox_name: str) -> None:
    result = _cli("status", "--name", fresh_sandbox_name, "--json")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip() == (
        f"no sandbox named {fresh_sandbox_name!r} "
        f"(start one with: mirrord-trace sandbox up --name {fresh_sandbox_name})"
    )
    with pytest.raises(SandboxError, match="is it up"):
        run_in_sandbox_netns(["true"], name=fresh_sandbox_name)


def test_non_root_is_told_that_root_is_needed(fresh_sandbox_name: str) -> None:
    as_nobody = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
    for command in ("up", "down"):
        result = _cli(command, "--name", fresh_sandbox_name, prefix=as_nobody)
        assert result.returncode == 1
        assert result.stderr.strip().splitlines() == [
            f"Error: `sandbox {command}` needs root (it creates network namespaces, veth links "
            "and a chroot): run it as root, e.g. with sudo"
        ]
    assert status(fresh_sandbox_name) is None
