"""`python -m agent`: start an agent for one target process.

Order matters: the listener is created first, in the agent's own network namespace, so the
client can reach it; then the agent enters the target's network namespace before any thread
exists, so every later socket (and every thread, which inherits it) belongs to the target.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import re
import socket
import sys
from pathlib import Path
from typing import NoReturn

import click

from agent.server import AgentServer
from agent.target.container_pid import ContainerNotFound, find_container_pid, parse_container_id
from agent.target.linux import CLONE_NEWNET, setns
from agent.target.root import TargetRoot
from mirrord_trace.protocol import token_digest

TOKEN_ENV = "MIRRORD_TRACE_AGENT_TOKEN"
# Only the token's SHA-256: what a Kubernetes agent's spec holds (readers of the spec must not
# be able to connect; see docs/security.md).
TOKEN_SHA256_ENV = "MIRRORD_TRACE_AGENT_TOKEN_SHA256"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
NEED_ROOT = (
    "the agent must run as root (CAP_SYS_ADMIN + CAP_SYS_PTRACE) to enter the target's "
    "namespaces: run it with sudo"
)


def fail(message: str) -> NoReturn:
    click.echo(f"mirrord-trace agent: {message}", err=True)
    sys.exit(1)


UNIX_PREFIX = "unix:"


def parse_listen(value: str) -> tuple[str, int]:
    """(host, port), or (path, -1) for `unix:PATH`."""
    if value.startswith(UNIX_PREFIX):
        path = value[len(UNIX_PREFIX) :]
        if not path.startswith("/"):
            raise click.BadParameter(f"{value!r}: the socket path must be absolute")
        return path, -1
    host, separator, port = value.rpartition(":")
    host = host.strip("[]")
    if not separator or not host or not port.isdigit() or int(port) > 65535:
        raise click.BadParameter(
            f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:0 or [::1]:7000) or unix:PATH"
        )
    return host, int(port)


def read_token_digest(token_file: Path | None) -> str:
    """The SHA-256 of the session token the agent accepts; the token itself is not kept."""
    digest = os.environ.pop(TOKEN_SHA256_ENV, "").strip().lower()
    if digest:
        if token_file is not None:
            fail(f"give either {TOKEN_SHA256_ENV} or --token-file, not both")
        if not _SHA256_HEX.fullmatch(digest):
            fail(f"{TOKEN_SHA256_ENV} must be 64 hexadecimal digits (a SHA-256)")
        return digest
    return token_digest(read_token(token_file))


def read_token(token_file: Path | None) -> str:
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as error:
            fail(f"cannot read the token file {token_file}: {error.strerror}")
    else:
        # Taken out of the environment so nothing the agent starts could inherit it.
        token = os.environ.pop(TOKEN_ENV, "").strip()
    if not token:
        fail(f"no session token: set {TOKEN_ENV} (or {TOKEN_SHA256_ENV}) or pass --token-file")
    return token


def make_listener(host: str, port: int) -> socket.socket:
    if port < 0:
        return make_unix_listener(host)
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(128)
    except OSError as error:
        fail(f"cannot listen on {host}:{port}: {error.strerror or error}")
    listener.setblocking(False)
    return listener


def make_unix_listener(path: str) -> socket.socket:
    """A Unix socket only root may connect to: the socket file is 0600 (the directory it is
    in should be private too) and every client's SO_PEERCRED is checked (AgentServer.admit)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old_umask = os.umask(0o177)
        try:
            listener.bind(path)
        finally:
            os.umask(old_umask)
        listener.listen(128)
    except OSError as error:
        listener.close()
        fail(f"cannot listen on unix:{path}: {error.strerror or error}")
    listener.setblocking(False)
    return listener


def adopt_session_socket(fd: int) -> socket.socket:
    try:
        sock = socket.socket(fileno=fd)
    except OSError as error:
        fail(f"--session-fd {fd} is not a socket: {error.strerror or error}")
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        sock.close()
        fail(f"--session-fd {fd} must be a Unix stream socket")
    sock.setblocking(False)
    return sock


def enter_target(pid: int) -> TargetRoot:
    if os.geteuid() != 0:
        fail(NEED_ROOT)
    try:
        ns_fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            setns(ns_fd, CLONE_NEWNET)
        finally:
            os.close(ns_fd)
        return TargetRoot(pid)
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ESRCH):
            fail(f"no process with pid {pid}: check --target-pid")
        if error.errno in (errno.EPERM, errno.EACCES):
            fail(
                f"permission denied entering the namespaces of process {pid}: the agent needs "
                "CAP_SYS_ADMIN + CAP_SYS_PTRACE over it (root in its user namespace)"
            )
        fail(f"cannot enter the namespaces of process {pid}: {error.strerror}")


def announce(listener: socket.socket, ready_fd: int | None) -> None:
    if listener.family == socket.AF_UNIX:
        where: dict[str, object] = {"path": listener.getsockname()}
    else:
        host, port = listener.getsockname()[:2]
        where = {"host": host, "port": port}
    line = json.dumps({**where, "pid": os.getpid()}) + "\n"
    if ready_fd is None:
        sys.stdout.write(line)
        sys.stdout.flush()
        return
    try:
        os.write(ready_fd, line.encode())
        os.close(ready_fd)
    except OSError as error:
        fail(f"cannot write to --ready-fd {ready_fd}: {error.strerror}")


def check_container_id(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        try:
            parse_container_id(value)
        except ValueError as error:
            raise click.BadParameter(str(error)) from None
    return value


def resolve_target(target_pid: int | None, container_id: str | None) -> int:
    """--target-pid, or the main process of --container-id (a Kubernetes container)."""
    if target_pid is not None:
        return target_pid
    assert container_id is not None
    try:
        return find_container_pid(container_id)
    except ContainerNotFound as error:
        fail(str(error))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--target-pid", type=click.IntRange(min=1), help="Target process.")
@click.option(
    "--container-id",
    callback=check_container_id,
    help="Target container, as in the pod status (containerd://<id>); its main process is "
    "found through /proc/*/cgroup.",
)
@click.option(
    "--listen",
    default="127.0.0.1:0",
    show_default=True,
    help="HOST:PORT to listen on, or unix:PATH (a Unix socket only root may use).",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"File holding the session token (default: ${TOKEN_ENV}).",
)
@click.option(
    "--idle-ttl",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Exit after this many seconds without a connected client.",
)
@click.option(
    "--ready-fd",
    type=click.IntRange(min=0),
    help="Write the ready line (JSON: host, port, pid) to this fd instead of stdout.",
)
@click.option(
    "--session-fd",
    type=click.IntRange(min=0),
    help="A connected Unix stream socket (one end of a socket pair made by the local side "
    "on this machine) to serve a session on, besides the listener's.",
)
def main(
    target_pid: int | None,
    container_id: str | None,
    listen: str,
    token_file: Path | None,
    idle_ttl: float,
    ready_fd: int | None,
    session_fd: int | None,
) -> None:
    """Serve mirrord-trace requests from inside the namespaces of a target process."""
    if (target_pid is None) == (container_id is None):
        raise click.UsageError("give exactly one of --target-pid and --container-id")
    host, port = parse_listen(listen)
    digest = read_token_digest(token_file)
    if os.geteuid() != 0:
        fail(NEED_ROOT)
    target_pid = resolve_target(target_pid, container_id)
    listener = make_listener(host, port)
    session_socket = adopt_session_socket(session_fd) if session_fd is not None else None
    root = enter_target(target_pid)
    server = AgentServer(target_pid, root, digest, idle_ttl, listener, session_socket)
    announce(listener, ready_fd)
    try:
        asyncio.run(server.serve())
    finally:
        if port < 0:
            remove_unix_socket(host)


def remove_unix_socket(path: str) -> None:
    """The socket file, and its directory when nothing else is in it (the local side made it
    for this agent alone): nothing is left when the side that made it died first."""
    with contextlib.suppress(OSError):
        os.unlink(path)
        os.rmdir(os.path.dirname(path))
