"""Registry credentials from Docker's client configuration, looked up as `docker push` does.

$DOCKER_CONFIG/config.json (default ~/.docker/config.json):
    "credHelpers": {"HOST": "NAME"}   ask docker-credential-NAME for this host
    "auths": {"HOST": {"auth": base64("user:password")}}   (or "username"/"password",
             or "identitytoken": an OAuth2 refresh token, e.g. Azure's)
    "credsStore": "NAME"              ask docker-credential-NAME for any other host
Keys of "auths" may be written as a URL (https://HOST, https://HOST/v1/); Docker Hub's key is
https://index.docker.io/v1/. `docker login`, `podman login --authfile`, `gcloud auth
configure-docker`, `aws ecr get-login-password | docker login` all write these.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mirrord_trace.agent_image.reference import DOCKER_HUB, DOCKER_HUB_AUTH_KEY, Reference


class CredentialsError(Exception):
    """The configuration names credentials that cannot be read."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str
    identity_token: str | None = None  # a refresh token for the registry's token service
    source: str = ""  # where they came from, for messages


def config_path() -> Path:
    directory = os.environ.get("DOCKER_CONFIG")
    return Path(directory) / "config.json" if directory else Path.home() / ".docker" / "config.json"


def _host_of_key(key: str) -> str:
    host = key.removeprefix("https://").removeprefix("http://")
    return host.split("/", 1)[0]


def _auth_keys(reference: Reference) -> list[str]:
    if reference.registry == DOCKER_HUB:
        return [DOCKER_HUB_AUTH_KEY, DOCKER_HUB, "index.docker.io", "registry-1.docker.io"]
    return [reference.registry]


def _from_auths(entry: dict[str, Any], source: str) -> Credentials | None:
    username, password = entry.get("username", ""), entry.get("password", "")
    if entry.get("auth"):
        try:
            decoded = base64.b64decode(entry["auth"]).decode()
        except (ValueError, UnicodeDecodeError):
            raise CredentialsError(
                f"the 'auth' of {source} is not base64 of user:password", "log in again"
            ) from None
        username, _, password = decoded.partition(":")
    token = entry.get("identitytoken")
    if not (username or password or token):
        return None
    return Credentials(username, password, token, source)


def _from_helper(helper: str, host: str) -> Credentials | None:
    program = f"docker-credential-{helper}"
    try:
        result = subprocess.run(
            [program, "get"], input=host, capture_output=True, text=True, timeout=60
        )
    except FileNotFoundError:
        raise CredentialsError(
            f"{config_path()} names the credential helper {program}, which is not installed",
            f"install it, or remove '{helper}' from {config_path()}",
        ) from None
    if result.returncode != 0:
        if "credentials not found" in (result.stdout + result.stderr).lower():
            return None
        raise CredentialsError(
            f"{program} failed for {host}: {(result.stderr or result.stdout).strip()}",
            f"log in to {host} again",
        )
    try:
        answer = json.loads(result.stdout)
    except ValueError:
        raise CredentialsError(
            f"{program} answered something that is not JSON for {host}",
            f"check {program} get, or remove it from {config_path()}",
        ) from None
    username, secret = answer.get("Username", ""), answer.get("Secret", "")
    if username == "<token>":  # the helper's way of returning an identity token
        return Credentials("", "", secret, program)
    return Credentials(username, secret, None, program)


def lookup(reference: Reference) -> Credentials | None:
    """The credentials for the reference's registry, or None (anonymous)."""
    path = config_path()
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise CredentialsError(
            f"{path} cannot be read ({error})", "fix the file or set DOCKER_CONFIG"
        ) from None
    keys = _auth_keys(reference)
    helpers = config.get("credHelpers") or {}
    for key in keys:
        if key in helpers:
            return _from_helper(helpers[key], key)
    auths = config.get("auths") or {}
    by_host = {_host_of_key(key): entry for key, entry in auths.items()}
    for key in keys:
        entry = auths.get(key) or by_host.get(_host_of_key(key))
        if entry:
            found = _from_auths(entry, f"{path} auths[{key}]")
            if found:
                return found
    if config.get("credsStore"):
        return _from_helper(config["credsStore"], keys[0])
    return None
