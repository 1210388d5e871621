"""A real target for the agent tests: a process in its own network namespace and chroot.

The target runs with a known environment, serves TCP/UDP echo, a TCP byte source and a UDP
port that never answers on 127.0.0.1 inside its namespace only, and drops to uid 1000.
dnsmasq answers DNS inside the same namespace. A chrooted "oracle" process reads paths the
way the target itself would, so confinement tests can compare the agent's answers with the
truth. Everything is killed and removed on exit, whatever happens.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

TARGET_UID = 1000
SOURCE_BYTES = 16 * 1024 * 1024
SECRET = b"TOP-SECRET-HOST-ONLY-4f1c"
TARGET_ENV = {
    b"PATH": b"/bin",
    b"GREETING": b"hello from the target",
    b"RAW_BYTES": b"\xff\xfe-not-utf8",
}

_TARGET_SCRIPT = r"""
import ctypes, json, os, socket, subprocess, sys, threading, time
root, source_bytes, stuck_fuse = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
if stuck_fuse:
    # A FUSE mount whose server never answers: every lookup below it blocks (like a dead
    # NFS server) until this process, the only holder of the device fd, dies.
    fuse_fd = os.open("/dev/fuse", os.O_RDWR)
    options = f"fd={fuse_fd},rootmode=40000,user_id=0,group_id=0".encode()
    libc = ctypes.CDLL(None, use_errno=True)
    mount_point = os.path.join(root, "stuck").encode()
    if libc.mount(b"deadfuse", mount_point, b"fuse.dead", 0, options) != 0:
        sys.exit(f"mounting the stuck FUSE filesystem failed: errno {ctypes.get_errno()}")
PATTERN = bytes(range(256)) * 256

def serve(listener, handler):
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=handler, args=(conn,), daemon=True).start()

def echo(conn):
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)

def source(conn):
    with conn:
        left = source_bytes
        while left:
            chunk = PATTERN[: min(left, len(PATTERN))]
            conn.sendall(chunk)
            left -= len(chunk)

def udp_echo(sock):
    while True:
        data, peer = sock.recvfrom(65536)
        sock.sendto(data, peer)

ports = {}
for name, handler in (("echo", echo), ("source", source)):
    listener = socket.create_server(("127.0.0.1", 0))
    ports[name] = listener.getsockname()[1]
    threading.Thread(target=serve, args=(listener, handler), daemon=True).start()
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("127.0.0.1", 0))
ports["udp_echo"] = udp.getsockname()[1]
blackhole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
blackhole.bind(("127.0.0.1", 0))  # receives, never answers
ports["udp_blackhole"] = blackhole.getsockname()[1]
threading.Thread(target=udp_echo, args=(udp,), daemon=True).start()
os.chroot(root)
os.chdir("/")
os.setgroups([])
os.setgid(1000)
os.setuid(1000)
print(json.dumps(ports), flush=True)
while True:
    time.sleep(3600)
"""

_DNSMASQ_OPTIONS = (
    "--keep-in-foreground",
    "--conf-file=/dev/null",
    "--no-resolv",
    "--no-hosts",
    "--bind-interfaces",
    "--listen-address=127.0.0.1",
    "--port=53",
    "--pid-file",
    "--user=root",
    "--address=/svc.cluster.test/10.96.0.10",
)

_ORACLE_SCRIPT = r"""
import os, sys
os.chroot(sys.argv[1])
os.chdir("/")
for line in sys.stdin:
    path = bytes.fromhex(line.strip())
    try:
        with open(path, "rb") as f:
            answer = "ok " + f.read().hex()
    except OSError as e:
        answer = f"err {e.errno}"
    print(answer, flush=True)
"""


@dataclass
class Target:
    pid: int
    base: Path  # holds the secret and the root
    root: Path  # the target's "/"
    ports: dict[str, int]
    big_file_sha256: str


def _build_root(base: Path) -> tuple[Path, str]:
    (base / "secret.txt").write_bytes(SECRET)
    root = base / "root"
    for directory in ("etc", "data/subdir", "maze", "bin", "stuck"):
        (root / directory).mkdir(parents=True)
    (root / "etc/hostname").write_text("target-host\n")
    (root / "etc/resolv.conf").write_text(
        "nameserver 127.0.0.1\nsearch svc.cluster.test\noptions ndots:5\n"
    )
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n10.1.2.3 hosts-only.test\n")
    (root / "data/small.txt").write_text("small file inside the target\n")
    big = os.urandom(3 * 1024 * 1024 + 12345)
    (root / "data/big.bin").write_bytes(big)
    (root / "data/link-to-small").symlink_to("small.txt")
    (root / "data/absolute-link").symlink_to("/data/small.txt")
    (root / "data/escape").symlink_to("../../../secret.txt")
    (root / "data/host-path").symlink_to(base / "secret.txt")
    (root / "data/loop").symlink_to("loop")
    private = root / "data/private.txt"
    private.write_text("root only\n")
    private.chmod(0o600)
    mine = root / "data/owned-by-target.txt"
    mine.write_text("target's own file\n")
    mine.chmod(0o600)
    os.chown(mine, TARGET_UID, TARGET_UID)
    script = root / "bin/tool"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    return root, hashlib.sha256(big).hexdigest()


def _read_line(stream, timeout: float, what: str) -> bytes:
    ready, _, _ = select.select([stream], [], [], timeout)
    if not ready:
        raise RuntimeError(f"{what} did not become ready within {timeout} s")
    line = stream.readline()
    if not line:
        raise RuntimeError(f"{what} exited during start-up")
    return line


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            stream.close()


@contextlib.contextmanager
def running_target(stuck_fuse: bool = False) -> Iterator[Target]:
    """The target; with `stuck_fuse`, its own mount namespace has a FUSE filesystem at /stuck
    whose server never answers."""
    base = Path(tempfile.mkdtemp(prefix="mirrord-trace-agent-test-"))
    processes: list[subprocess.Popen] = []
    try:
        root, big_sha = _build_root(base)
        namespaces = ["--net", "--mount", "--propagation=private"] if stuck_fuse else ["--net"]
        arguments = [str(root), str(SOURCE_BYTES), "1" if stuck_fuse else "0"]
        target = subprocess.Popen(
            ["unshare", *namespaces, sys.executable, "-c", _TARGET_SCRIPT, *arguments],
            env=TARGET_ENV,
            stdout=subprocess.PIPE,
        )
        processes.append(target)
        ports = json.loads(_read_line(target.stdout, 30, "the test target"))
        dnsmasq = subprocess.Popen(
            ["nsenter", f"--net=/proc/{target.pid}/ns/net", "dnsmasq", *_DNSMASQ_OPTIONS],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append(dnsmasq)
        yield Target(target.pid, base, root, ports, big_sha)
    finally:
        for process in reversed(processes):
            _stop(process)
        shutil.rmtree(base, ignore_errors=True)


class ChrootOracle:
    """Reads files exactly as a process chrooted into the target's root would."""

    def __init__(self, root: Path) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-c", _ORACLE_SCRIPT, str(root)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def read(self, path: str) -> bytes | int:
        """The file's content, or the errno the open/read failed with."""
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(os.fsencode(path).hex() + "\n")
        self._process.stdin.flush()
        status, _, value = self._process.stdout.readline().strip().partition(" ")
        return bytes.fromhex(value) if status == "ok" else int(value)

    def close(self) -> None:
        _stop(self._process)
