"""Bringing a sandbox up, inspecting it, and taking it down again (completely)."""

from __future__ import annotations

import ctypes
import hashlib
import os
import secrets
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

from mirrord_trace.sandbox import network, pod_content, processes, services, state
from mirrord_trace.sandbox.errors import SandboxError, SandboxExistsError
from mirrord_trace.sandbox.info import SandboxInfo
from mirrord_trace.sandbox.plan import (
    APP_PORT,
    DEFAULT_NAME,
    DNS_PORT,
    ECHO_PORT,
    MAX_INDEX,
    POD_HOSTNAME,
    POD_VETH,
    SEARCH_DOMAINS,
    SERVICE_PORT,
    SandboxPlan,
    preferred_index,
    validate_name,
)
from mirrord_trace.sandbox.rootfs import build_rootfs

Reporter = Callable[[str], None]
_MNT_DETACH = 2


def _quiet(_message: str) -> None:
    return


def require_root(action: str) -> None:
    if os.geteuid() != 0:
        raise SandboxError(
            f"`sandbox {action}` needs root (it creates network namespaces, veth links and a "
            "chroot): run it as root, e.g. with sudo"
        )


def _require_programs() -> None:
    missing = [program for program in services.REQUIRED_PROGRAMS if not Path(program).exists()]
    if missing:
        raise SandboxError(
            f"missing {', '.join(missing)}: install the Debian packages dnsmasq-base, "
            "busybox-static and util-linux (`make apt` does)"
        )


def describe(plan: SandboxPlan, app_secret: str, large_file_sha256: str) -> SandboxInfo:
    """The full description of a sandbox before any of it exists (pids come later)."""
    return SandboxInfo(
        name=plan.name,
        index=plan.index,
        netns=plan.netns,
        netns_path=str(plan.netns_path),
        root=plan.root,
        state_dir=plan.state_dir,
        logs_dir=plan.logs_dir,
        host_veth=plan.host_veth,
        pod_veth=POD_VETH,
        host_addr=plan.host_addr,
        target_addr=plan.target_addr,
        link_prefixlen=plan.link_network.prefixlen,
        app_port=APP_PORT,
        dns_addr=plan.dns_addr,
        dns_port=DNS_PORT,
        dns_log=plan.logs_dir / "dns.log",
        service_addr=plan.service_addr,
        service_port=SERVICE_PORT,
        echo_port=ECHO_PORT,
        names=pod_content.cluster_names(plan),
        multi_names=pod_content.multi_names(plan),
        txt_records=pod_content.txt_records(plan),
        hosts_entries=pod_content.hosts_entries(plan),
        search_domains=list(SEARCH_DOMAINS),
        hostname=POD_HOSTNAME,
        app_secret=app_secret,
        env=pod_content.pod_env(app_secret),
        files=pod_content.text_files(plan),
        symlinks=pod_content.symlinks(),
        large_file=pod_content.LARGE_FILE,
        large_file_size=pod_content.LARGE_FILE_SIZE,
        large_file_sha256=large_file_sha256,
        service_body=pod_content.SERVICE_BODY,
        app_body=pod_content.APP_BODY,
    )


def _plan_of(info: SandboxInfo) -> SandboxPlan:
    return SandboxPlan(info.name, info.index)


def _allocate_index(name: str) -> int:
    taken = state.indexes_in_use(except_name=name)
    used_networks = network.host_networks_in_use()
    first = preferred_index(name)
    for offset in range(MAX_INDEX):
        index = (first - 1 + offset) % MAX_INDEX + 1
        collides = network.plan_collides(SandboxPlan(name, index), used_networks)
        if index not in taken and not collides:
            return index
    raise SandboxError(
        "no free address block left in 10.213.0.0/16 and 10.214.0.0/16: remove unused "
        "sandboxes with `mirrord-trace sandbox down --name NAME`"
    )


def _in_netns(pid: int, netns_path: str) -> bool:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(netns_path).st_ino
    except PermissionError:
        return True  # not root: cannot look, the liveness check alone has to do
    except OSError:
        return False


def problems(info: SandboxInfo) -> list[str]:
    """What is wrong with a sandbox that has state; empty when it is healthy."""
    plan = _plan_of(info)
    found: list[str] = []
    if info.phase != "up":
        found.append("its build did not finish")
    if not network.netns_exists(plan):
        found.append(f"network namespace {info.netns} is missing")
    if not network.host_veth_exists(plan):
        found.append(f"host link {info.host_veth} is missing")
    for role, pid in sorted(info.pids.items()):
        if not (processes.is_running(pid) and _in_netns(pid, info.netns_path)):
            found.append(f"{role} process {pid} is not running")
    return found


def _leftovers_exist(plan: SandboxPlan) -> bool:
    return (
        plan.state_dir.exists() or network.netns_exists(plan) or network.host_veth_exists(plan)
    )


def _check_app_reachable(info: SandboxInfo) -> None:
    try:
        with socket.create_connection((info.target_addr, info.app_port), timeout=5):
            pass
    except OSError as error:
        raise SandboxError(
            f"the host cannot reach the target at {info.target_addr}:{info.app_port} ({error})"
        ) from error


def _start_processes(info: SandboxInfo) -> None:
    # Started together, waited for together: each takes a moment to bind.
    launches = {
        "dns": (services.dnsmasq_argv(info), services.SERVICE_ENV),
        "service": (services.cluster_service_argv(info), services.SERVICE_ENV),
        "target": (services.target_argv(info), info.env),
    }
    for role, (argv, env) in launches.items():
        info.pids[role] = processes.spawn(argv, env, info.logs_dir / f"{role}.log")
        state.save(info)
    readiness = {
        "dns": [("udp", info.dns_port)],
        "service": [("tcp", info.service_port), ("tcp", info.echo_port), ("udp", info.echo_port)],
        "target": [("tcp", info.app_port)],
    }
    for role, sockets in readiness.items():
        for protocol, port in sockets:
            log = info.logs_dir / f"{role}.log"
            processes.wait_until_listening(info.pids[role], protocol, port, f"the {role}", log)


def _build(info: SandboxInfo, large_file_data: bytes) -> None:
    info.logs_dir.mkdir(parents=True)
    build_rootfs(info, large_file_data)
    network.build_network(_plan_of(info))
    _start_processes(info)
    _check_app_reachable(info)
    # The entrypoint's shell adds a little (PWD, SHLVL): record what the target really has.
    info.env = processes.read_environ(info.target_pid)
    info.phase = "up"
    state.save(info)


def _build_or_remove(info: SandboxInfo, large_file_data: bytes) -> None:
    """Build the sandbox; if that fails, remove whatever part of it exists, then report."""
    try:
        _build(info, large_file_data)
    except BaseException as error:
        outcome = "what was built is removed"
        try:
            _teardown(_plan_of(info), info)
        except SandboxError as cleanup_error:
            outcome = (
                f"removing what was built failed too ({cleanup_error}): "
                f"run `mirrord-trace sandbox down --name {info.name}`"
            )
        if not isinstance(error, Exception):  # KeyboardInterrupt and the like stay as they are
            raise
        detail = str(error) if isinstance(error, SandboxError) else repr(error)
        raise SandboxError(
            f"could not bring sandbox {info.name!r} up: {detail}; {outcome}"
        ) from error


def up(
    name: str = DEFAULT_NAME, *, exist_ok: bool = False, report: Reporter = _quiet
) -> SandboxInfo:
    """Build the sandbox pod `name` and return its description once every part answers.

    A healthy sandbox of that name raises SandboxExistsError (or is returned, with exist_ok);
    a broken one (crashed processes, missing namespace) is removed and built anew.
    If building fails, whatever was built is removed before SandboxError is raised.
    """
    validate_name(name)
    require_root("up")
    _require_programs()
    processes.reap_finished_children()
    with state.exclusive_lock():
        try:
            existing = state.load(name)
        except SandboxError:
            existing = None  # unreadable state: clean by derived names below
        if existing is not None:
            existing.problems = problems(existing)
            if existing.healthy:
                if exist_ok:
                    return existing
                raise SandboxExistsError(existing)
            report(f"removing stale sandbox {name!r} ({'; '.join(existing.problems)})")
            _teardown(_plan_of(existing), existing)
        elif _leftovers_exist(SandboxPlan(name, 0)):
            report(f"removing leftovers of sandbox {name!r}")
            _teardown(SandboxPlan(name, 0), None)

        plan = SandboxPlan(name, _allocate_index(name))
        large_file_data = pod_content.large_file_bytes()
        info = describe(plan, secrets.token_hex(16), hashlib.sha256(large_file_data).hexdigest())
        state.save(info)  # before anything else exists: down can always find what up made
        _build_or_remove(info, large_file_data)
        return info


def status(name: str = DEFAULT_NAME) -> SandboxInfo | None:
    """The sandbox's description with its current `problems`, or None if there is none."""
    validate_name(name)
    processes.reap_finished_children()
    info = state.load(name)
    if info is not None:
        info.problems = problems(info)
    return info


def down(name: str = DEFAULT_NAME) -> bool:
    """Remove everything of sandbox `name`; True if there was anything to remove."""
    validate_name(name)
    require_root("down")
    processes.reap_finished_children()
    with state.exclusive_lock():
        try:
            info = state.load(name)
        except SandboxError:
            info = None
        plan = _plan_of(info) if info else SandboxPlan(name, 0)
        if info is None and not _leftovers_exist(plan):
            return False
        _teardown(plan, info)
        return True


def _mounts_below(directory: Path) -> list[str]:
    prefix = f"{directory}/"
    mount_points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mount_point = line.split()[4]
        if mount_point == str(directory) or mount_point.startswith(prefix):
            mount_points.append(mount_point)
    return sorted(mount_points, key=len, reverse=True)  # innermost first


def _unmount_below(directory: Path) -> None:
    # Someone may have bind-mounted into the pod's root; deleting files through a mount would
    # delete the mounted files themselves.
    libc = ctypes.CDLL(None, use_errno=True)
    for mount_point in _mounts_below(directory):
        if libc.umount2(mount_point.encode(), _MNT_DETACH) != 0:
            raise SandboxError(
                f"cannot unmount {mount_point} ({os.strerror(ctypes.get_errno())}); unmount it "
                "and run `down` again"
            )


def _remove_files(plan: SandboxPlan) -> None:
    directory = plan.state_dir
    if not directory.exists():
        return
    _unmount_below(directory)
    for entry in directory.iterdir():
        if entry.name == "state.json":
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    state.remove(plan.name)  # last: while anything else remained, the state said where
    directory.rmdir()


def _teardown(plan: SandboxPlan, info: SandboxInfo | None) -> None:
    """Remove every part of the sandbox; each step runs even if an earlier one failed."""
    failures: list[str] = []
    steps: list[tuple[str, Callable[[], None]]] = [
        ("stop processes", lambda: processes.stop_processes(
            processes.processes_inside(plan.netns_path, plan.root),
            also_reap=info.pids.values() if info else (),
        )),
        ("remove network", lambda: network.teardown_network(plan, with_routes=info is not None)),
    ]  # fmt: skip
    for what, step in steps:
        try:
            step()
        except Exception as error:
            failures.append(f"{what}: {error}")
    if not failures:
        # Files (and the state) go only when nothing else is left, so a retry knows the plan.
        try:
            _remove_files(plan)
        except Exception as error:
            failures.append(f"remove files: {error}")
    if failures:
        raise SandboxError(f"sandbox {plan.name!r} was not fully removed: {'; '.join(failures)}")
