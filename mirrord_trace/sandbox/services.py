"""Command lines of the pod's three processes: DNS server, cluster service, and the target.

All three enter the pod's network namespace with nsenter (the pid Popen reports is the process
itself: nsenter, unshare and chroot exec rather than fork).
"""

from __future__ import annotations

import sys
from pathlib import Path

from mirrord_trace.sandbox.info import SandboxInfo

DNSMASQ = "/usr/sbin/dnsmasq"
NSENTER = "/usr/bin/nsenter"
UNSHARE = "/usr/bin/unshare"
CHROOT = "/usr/sbin/chroot"
REQUIRED_PROGRAMS = (DNSMASQ, NSENTER, UNSHARE, CHROOT, "/bin/busybox")

# What the services themselves run with (the target gets the pod's environment instead); the
# package path makes the cluster service importable even without an installed distribution.
SERVICE_ENV = {
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
}


def in_netns(info: SandboxInfo, argv: list[str]) -> list[str]:
    return [NSENTER, f"--net={info.netns_path}", "--", *argv]


def dnsmasq_argv(info: SandboxInfo) -> list[str]:
    argv = [
        DNSMASQ,
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",  # no upstream: only the cluster names below exist
        "--no-hosts",
        "--pid-file=",
        "--user=root",  # so it can keep writing its query log
        f"--listen-address={info.dns_addr}",
        "--bind-interfaces",
        f"--port={info.dns_port}",
        "--log-queries",
        f"--log-facility={info.dns_log}",
        # Answer everything locally: unknown names get NXDOMAIN rather than REFUSED.
        "--local=/#/",
    ]
    for name, address in info.names.items():
        argv.append(f"--host-record={name},{address}")
    for name, addresses in info.multi_names.items():
        argv.extend(f"--host-record={name},{address}" for address in addresses)
    for name, text in info.txt_records.items():
        argv.append(f"--txt-record={name},{text}")
    return in_netns(info, argv)


def cluster_service_argv(info: SandboxInfo) -> list[str]:
    return in_netns(
        info,
        [
            sys.executable,
            "-m",
            "mirrord_trace.sandbox.cluster_service",
            f"--address={info.service_addr}",
            f"--http-port={info.service_port}",
            f"--echo-port={info.echo_port}",
            f"--body={info.service_body}",
            f"--sandbox={info.name}",  # also tells, in ps, which sandbox it serves
        ],
    )


def target_argv(info: SandboxInfo) -> list[str]:
    # Own mount and UTS namespaces (as a container has), chrooted into the pod's root.
    return in_netns(
        info,
        [UNSHARE, "--mount", "--uts", "--propagation=private", "--", CHROOT, str(info.root),
         "/entrypoint.sh"],
    )  # fmt: skip
