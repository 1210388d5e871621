"""Helpers for the outgoing-traffic and DNS tests (no tests here).

- traced(): `mirrord-trace exec --target pid/<sandbox target>` with flags or a config file,
  optionally with this machine's /etc/resolv.conf replaced (in a private mount namespace of
  that one command) so that "the host's resolver" is a server the test controls.
- HostResolver: a small DNS server on a loopback address, answering A records it was given
  and NXDOMAIN otherwise, logging every name it was asked.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.conftest import ROOT

MIRRORD_TRACE = str(ROOT / ".venv" / "bin" / "mirrord-trace")
PYTHON = str(ROOT / ".venv" / "bin" / "python")
UNSHARE = "/usr/bin/unshare"


def traced(
    sandbox,
    argv: Sequence[str],
    *,
    flags: Sequence[str] = (),
    config: dict | None = None,
    work_dir: Path | None = None,
    resolv_conf: Path | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess:
    """Run argv under mirrord-trace against the sandbox target; output as text."""
    options = ["--target", f"pid/{sandbox.target_pid}", *flags]
    if config is not None:
        assert work_dir is not None, "a config file needs a directory to live in"
        file = work_dir / "mirrord.json"
        file.write_text(json.dumps(config))
        options += ["-f", str(file)]
    command = [MIRRORD_TRACE, "exec", *options, "--", *argv]
    if resolv_conf is not None:
        # The bind mount lives and dies with this command's private mount namespace.
        script = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'
        command = [UNSHARE, "--mount", "--propagation", "private", "sh", "-c", script,
                   str(resolv_conf), *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


@contextlib.contextmanager
def pod_server(sandbox, script: str, host: str) -> Iterator[int]:
    """Run a Python server `script` (argv[1]: the address to listen on; it prints its port)
    inside the pod's network namespace; yields the port, kills it afterwards."""
    server = subprocess.Popen(
        ["nsenter", f"--net={sandbox.netns_path}", "--", PYTHON, "-c", script, host],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline().strip()
        assert line.isdigit(), f"the pod server did not start: {line!r}"
        yield int(line)
    finally:
        server.kill()
        server.wait()


def native(argv: Sequence[str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)


def trace_lines(path: Path, syscall: str) -> list[str]:
    return [line for line in path.read_text().splitlines() if f"] {syscall}(" in line]


class HostResolver:
    """A DNS server on `address`:53 standing in for this machine's resolver."""

    def __init__(self, address: str, answers: dict[str, str]) -> None:
        from scapy.layers.dns import DNS, DNSRR

        self._dns, self._record = DNS, DNSRR
        self.address = address
        self.answers = {name.rstrip(".").lower(): ip for name, ip in answers.items()}
        self.asked: list[str] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((address, 53))
        self._sock.settimeout(0.1)  # so that close() is noticed soon
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def resolv_conf(self, directory: Path) -> Path:
        path = directory / "host-resolv.conf"
        path.write_text(f"nameserver {self.address}\n")
        return path

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                data, client = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                query = self._dns(data)
                name = query.qd[0].qname.decode().rstrip(".").lower()
                qtype = query.qd[0].qtype
            except Exception:
                continue
            self.asked.append(name)
            reply = self._dns(id=query.id, qr=1, aa=1, rd=query.rd, ra=1, qd=query.qd)
            if name in self.answers and qtype == 1:
                reply.an = self._record(rrname=name + ".", type="A", ttl=5,
                                        rdata=self.answers[name])
            elif name not in self.answers:
                reply.rcode = 3  # NXDOMAIN
            self._sock.sendto(bytes(reply), client)

    def close(self) -> None:
        self._closed.set()
        self._thread.join(5)
        self._sock.close()


class LocalHttpServer:
    """An HTTP server on this machine (not in the pod) that answers every GET with `body`."""

    def __init__(self, address: str, body: str) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        payload = body.encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer((address, 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
