"""HTTP/2 and gRPC through the filtered steal end to end: the sandbox pod runs its own server
(nghttpd, a grpcio server) in its network namespace, the same kind of server runs under
`mirrord-trace exec --target pid/<pod target>` with an http_filter, and real clients (curl,
nghttp, a grpcio client) on this machine talk to the pod's address."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest

from mirrord_trace.sandbox import SandboxInfo
from tests import grpc_echo
from tests.test_incoming_support import in_pod, traced_server

pytestmark = pytest.mark.skipif(
    shutil.which("nghttpd") is None or shutil.which("nghttp") is None,
    reason="nghttp2-client/nghttp2-server missing: `make setup` installs them (APT_PACKAGES)",
)
H2_PORT = 8090
GRPC_PORT = 50051


def docroot(tmp_path: Path, name: str, files: dict[str, str]) -> str:
    root = tmp_path / name
    root.mkdir()
    for path, content in files.items():
        (root / path).write_text(content)
    return str(root)


def curl(*args: str) -> bytes:
    done = subprocess.run(["curl", "-sS", "-m", "20", *args], capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_h2c_requests_and_streams_are_stolen_by_the_filter(
    sandbox: SandboxInfo, tmp_path: Path
) -> None:
    pod_files = docroot(tmp_path, "pod", {"who": "pod", "mine": "pod's mine"})
    program_files = docroot(tmp_path, "program", {"who": "program", "mine": "program's mine"})
    wanted = {"any_of": [{"path": "^/mine$"}, {"header": "^x-user: me$"}]}
    config = {"feature": {"network": {"incoming": {"mode": "steal", "http_filter": wanted}}}}
    nghttpd = ["nghttpd", "--no-tls", "-d"]
    with (
        in_pod(sandbox, [*nghttpd, pod_files, str(H2_PORT)], H2_PORT),
        traced_server(
            sandbox, [*nghttpd, program_files, str(H2_PORT)],
            config=config, tmp_path=tmp_path, ready=None,
        ),
    ):  # fmt: skip
        base = f"http://{sandbox.target_addr}:{H2_PORT}"
        assert curl("--http2-prior-knowledge", f"{base}/who") == b"pod"
        assert curl("--http2-prior-knowledge", "-H", "X-User: me", f"{base}/who") == b"program"
        assert curl("--http2-prior-knowledge", f"{base}/mine?x=1") == b"program's mine"
        assert curl("--http2", "-H", "x-user: me", f"{base}/who") == b"program"  # h2c upgrade
        # One connection, concurrent streams: /mine to the program, /who to the pod.
        urls = [f"{base}/{name}?{n}" for n in range(3) for name in ("mine", "who")]
        done = subprocess.run(["nghttp", "-n", "-s", *urls], capture_output=True, timeout=30)
        assert done.returncode == 0, done.stderr
        statuses = [line.split()[4] for line in done.stdout.decode().splitlines() if "?" in line]
        assert statuses == ["200"] * 6
        sizes = sorted(
            int(line.split()[5]) for line in done.stdout.decode().splitlines() if "?" in line
        )
        assert sizes == [len("pod")] * 3 + [len("program's mine")] * 3


def test_grpc_calls_go_to_the_program_by_method(sandbox: SandboxInfo, tmp_path: Path) -> None:
    build = tmp_path / "grpc-build"
    pb2, pb2_grpc = grpc_echo.stubs(build)
    server = [sys.executable, "-m", "tests.grpc_echo"]
    config = {"feature": {"network": {"incoming": {
        "mode": "steal", "http_filter": {"path_filter": "^/mirrordtrace.echo.Echo/Chat$"},
    }}}}  # fmt: skip
    with (
        in_pod(sandbox, [*server, "pod", f"0.0.0.0:{GRPC_PORT}", str(build)], GRPC_PORT),
        traced_server(
            sandbox, [*server, "program", f"0.0.0.0:{GRPC_PORT}", str(build)],
            config=config, tmp_path=tmp_path,
        ),
        grpc.insecure_channel(f"{sandbox.target_addr}:{GRPC_PORT}") as channel,
    ):  # fmt: skip
        stub: Any = pb2_grpc.EchoStub(channel)
        said = stub.Say(pb2.Message(text="unary"), timeout=30).text
        chat = stub.Chat(iter([pb2.Message(text=t) for t in ("a", "b", "c")]), timeout=30)
        chatted = [message.text for message in chat]
        assert said == "pod:unary"
        assert chatted == ["program:a", "program:b", "program:c"]
        # The same channel (one HTTP/2 connection) goes on serving both.
        assert stub.Say(pb2.Message(text="again"), timeout=30).text == "pod:again"
