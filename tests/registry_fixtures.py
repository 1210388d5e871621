"""A real registry for the push tests: Debian's docker-registry (distribution 2.8) on a free
loopback port, with its storage in a temporary directory, optionally behind htpasswd basic
authentication or token (Bearer) authentication. Stopped and removed after each test.

    with Registry(tmp_path, users={"alice": "secret"}) as registry:
        registry.host          # "127.0.0.1:PORT"
        registry.get("/v2/")   # requests.Response, as the registry's own client would see it
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import bcrypt
import requests
import yaml


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Registry:
    def __init__(
        self,
        workdir: Path,
        users: dict[str, str] | None = None,
        token_auth: dict[str, Any] | None = None,
    ) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.users = users or {}
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "warn"},
            "storage": {
                "filesystem": {"rootdirectory": str(workdir / "storage")},
                "delete": {"enabled": True},
            },
            "http": {"addr": self.host, "secret": "test-only"},
        }
        if self.users:
            htpasswd = workdir / "htpasswd"
            htpasswd.write_text(
                "".join(
                    f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(5)).decode()}\n"
                    for user, password in self.users.items()
                )
            )
            config["auth"] = {"htpasswd": {"realm": "test", "path": str(htpasswd)}}
        if token_auth:
            config["auth"] = {"token": token_auth}
        self.config_path = workdir / "config.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log = (workdir / "registry.log").open("w")
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Registry:
        self.process = subprocess.Popen(
            ["docker-registry", "serve", str(self.config_path)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"http://{self.host}/v2/", timeout=2)
                return self
            except requests.exceptions.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError(
                        "docker-registry did not start: " + self.log_text()
                    ) from None
                time.sleep(0.05)

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        self.log.close()

    def log_text(self) -> str:
        return (self.workdir / "registry.log").read_text(errors="replace")

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        if self.users:
            kwargs.setdefault("auth", next(iter(self.users.items())))
        return requests.get(f"http://{self.host}{path}", timeout=30, **kwargs)
