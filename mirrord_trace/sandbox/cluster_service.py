"""The sandbox's cluster-only service: HTTP on one address, plus TCP and UDP echo.

Started by the sandbox inside its network namespace with
`python -m mirrord_trace.sandbox.cluster_service --address A --body TEXT`.

HTTP routes:
  GET /            the known body (the sandbox records it as service_body)
  ANY /echo        JSON: method, path, headers, body_length, body_sha256, client address
  GET /bytes/<n>   n bytes of a repeating pattern (throughput measurements)
"""

from __future__ import annotations

import hashlib
import json
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import click

MAX_GENERATED_BYTES = 256 * 1024 * 1024
_PATTERN = bytes(range(256)) * 256  # 64 KiB


class _ServiceHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so load generators reuse connections
    server_version = "sandbox-cluster-service"
    body_text: str = ""

    def log_message(self, format: str, *args: object) -> None:
        # Request logging would dominate the cost under load; /echo reports what arrived.
        return

    def do_GET(self) -> None:
        if self.path == "/":
            self._reply(200, self.body_text.encode(), "text/plain")
        elif self.path.startswith("/echo"):
            self._echo()
        elif self.path.startswith("/bytes/"):
            self._generated(self.path.removeprefix("/bytes/"))
        else:
            self._reply(404, b"not found\n", "text/plain")

    def do_POST(self) -> None:
        if self.path.startswith("/echo"):
            self._echo()
        else:
            self._drain_body()
            self._reply(404, b"not found\n", "text/plain")

    do_PUT = do_POST
    do_DELETE = do_POST
    do_PATCH = do_POST

    def _drain_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _echo(self) -> None:
        body = self._drain_body()
        client_host, client_port = self.client_address[:2]
        details = {
            "method": self.command,
            "path": self.path,
            "headers": [[key, value] for key, value in self.headers.items()],
            "body_length": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "client_addr": client_host,
            "client_port": client_port,
        }
        self._reply(200, (json.dumps(details) + "\n").encode(), "application/json")

    def _generated(self, count_text: str) -> None:
        if not count_text.isdigit() or int(count_text) > MAX_GENERATED_BYTES:
            message = f"byte count must be 0..{MAX_GENERATED_BYTES}\n"
            self._reply(400, message.encode(), "text/plain")
            return
        remaining = int(count_text)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(remaining))
        self.end_headers()
        while remaining:
            chunk = _PATTERN[: min(remaining, len(_PATTERN))]
            self.wfile.write(chunk)
            remaining -= len(chunk)

    def _reply(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up its own name (getfqdn); the pod has no resolver that
        # knows it, and the lookup would stall start-up for the resolver's whole timeout.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)


class _TcpEcho(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


class _UdpEcho(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        sock.sendto(data, self.client_address)


class _ThreadingTcpServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


class _UdpServer(socketserver.UDPServer):
    allow_reuse_address = True


@click.command()
@click.option("--address", required=True, help="Address to listen on.")
@click.option("--http-port", type=int, default=80, show_default=True)
@click.option("--echo-port", type=int, default=7, show_default=True)
@click.option("--body", required=True, help="Body answered for GET /.")
@click.option("--sandbox", required=True, help="Sandbox name, shown in the Server header.")
def main(address: str, http_port: int, echo_port: int, body: str, sandbox: str) -> None:
    handler = type(
        "Handler",
        (_ServiceHandler,),
        {"body_text": body, "server_version": f"sandbox-cluster-service/{sandbox}"},
    )
    http_server = _HttpServer((address, http_port), handler)
    echo_servers: list[socketserver.BaseServer] = [
        _ThreadingTcpServer((address, echo_port), _TcpEcho),
        _UdpServer((address, echo_port), _UdpEcho),
    ]
    for server in echo_servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    http_server.serve_forever()


if __name__ == "__main__":
    main()
