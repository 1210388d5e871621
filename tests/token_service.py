"""A token service for the registry's token authentication (what Docker Hub's auth.docker.io,
GHCR's or Harbor's token endpoints are to their registries), written for the tests: no
package of one exists in Debian. The registry is the real one (registry_fixtures.Registry with
`token_auth=service.registry_config()`): it answers 401 with `Bearer realm=...`, and checks
the signature, issuer, audience, expiry and granted actions of every token it is shown.

Tokens are JWTs signed RS256 by openssl with a self-signed certificate (the registry's
`rootcertbundle`), carried in the token's `x5c` header. GET answers a user/password (Basic);
POST answers an OAuth2 refresh token (`grant_type=refresh_token`), as for Docker's identity
tokens. `requests` records each (method, scope, user) asked.
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ISSUER = "mirrord-trace-test-issuer"
SERVICE = "mirrord-trace-test-registry"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenService:
    def __init__(self, workdir: Path, users: dict[str, str], refresh_tokens: dict[str, str]):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.users = users
        self.refresh_tokens = refresh_tokens  # token -> user
        self.requests: list[tuple[str, str, str]] = []
        self.key, self.cert = workdir / "key.pem", workdir / "cert.pem"
        subprocess.run(
            [
                *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
                *("-subj", "/CN=token-service", "-keyout", str(self.key), "-out", str(self.cert)),
            ],
            check=True,
            capture_output=True,
        )
        der = subprocess.run(
            ["openssl", "x509", "-in", str(self.cert), "-outform", "DER"],
            check=True,
            capture_output=True,
        ).stdout
        self.x5c = base64.b64encode(der).decode()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
                user = service.basic_user(self.headers.get("Authorization", ""))
                service.answer(self, "GET", query, user)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                user = None
                if form.get("grant_type") == "refresh_token":
                    user = service.refresh_tokens.get(form.get("refresh_token", ""))
                service.answer(self, "POST", form, user)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> TokenService:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def registry_config(self) -> dict[str, Any]:
        return {
            "realm": self.realm,
            "service": SERVICE,
            "issuer": ISSUER,
            "rootcertbundle": str(self.cert),
        }

    def basic_user(self, header: str) -> str | None:
        if not header.startswith("Basic "):
            return None
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return user if self.users.get(user) == password else None

    def answer(
        self, handler: BaseHTTPRequestHandler, method: str, query: dict[str, str], user: str | None
    ) -> None:
        scope = query.get("scope", "")
        self.requests.append((method, scope, user or ""))
        if user is None:
            handler.send_response(401)
            handler.end_headers()
            return
        access = []
        if scope.startswith("repository:"):
            _, name, actions = scope.split(":")
            access.append({"type": "repository", "name": name, "actions": actions.split(",")})
        body = json.dumps({"token": self.sign(user, query.get("service", ""), access)}).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def sign(self, user: str, audience: str, access: list[dict[str, Any]]) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        claims = {
            "iss": ISSUER,
            "sub": user,
            "aud": audience,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = (
            f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        )
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)],
            input=signing_input.encode(),
            check=True,
            capture_output=True,
        ).stdout
        return f"{signing_input}.{_b64url(signature)}"
