"""echo.proto compiled on first use (grpcio-tools), and a server that names itself."""

from __future__ import annotations

import importlib
import sys
from concurrent import futures
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc

HERE = Path(__file__).resolve().parent


def stubs(build_dir: Path) -> tuple[ModuleType, ModuleType]:
    """(echo_pb2, echo_pb2_grpc), generated from echo.proto into build_dir."""
    from grpc_tools import protoc

    build_dir.mkdir(parents=True, exist_ok=True)
    if not (build_dir / "echo_pb2_grpc.py").exists():
        code = protoc.main(
            ["protoc", f"-I{HERE}", f"--python_out={build_dir}", f"--grpc_python_out={build_dir}",
             str(HERE / "echo.proto")]
        )  # fmt: skip
        if code != 0:
            raise RuntimeError(f"protoc failed on echo.proto (exit {code})")
    if str(build_dir) not in sys.path:
        sys.path.insert(0, str(build_dir))
    return importlib.import_module("echo_pb2"), importlib.import_module("echo_pb2_grpc")


def serve(build_dir: Path, name: str, address: str = "127.0.0.1:0") -> tuple[grpc.Server, int]:
    """A gRPC server on `address` whose answers start with `name`; (server, port)."""
    pb2, pb2_grpc = stubs(build_dir)

    class Echo(pb2_grpc.EchoServicer):  # type: ignore[misc,name-defined]
        def Say(self, request: Any, context: Any) -> Any:
            return pb2.Message(text=f"{name}:{request.text}")

        def Chat(self, requests: Any, context: Any) -> Any:
            for request in requests:
                yield pb2.Message(text=f"{name}:{request.text}")

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    pb2_grpc.add_EchoServicer_to_server(Echo(), server)
    port = server.add_insecure_port(address)
    server.start()
    return server, port
