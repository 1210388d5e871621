"""Pushing an image archive to a registry over the OCI distribution API (what `docker push`
speaks to Docker Hub, GHCR, ECR, GCR/Artifact Registry, ACR, Harbor, a `registry:2`):

    GET  /v2/                                   which authentication the registry wants
    HEAD /v2/NAME/blobs/DIGEST                  a blob it has already is not sent again
    POST /v2/NAME/blobs/uploads/                start an upload session (Location: where next)
    PUT  LOCATION?digest=DIGEST                 the whole blob at once (small blobs), or
    PATCH LOCATION (Content-Range) ... PUT      in chunks, then close with its digest
    PUT  /v2/NAME/manifests/TAG                 the manifest last: the tag appears complete

Authentication follows the registry's 401 challenge: `Basic` (credentials on every request) or
`Bearer realm=...,service=...` (a token from the realm, asked for with the credentials, for
scope repository:NAME:pull,push). Credentials come from credentials.lookup.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

import requests

from mirrord_trace.agent_image.archive import Descriptor, ImageArchive
from mirrord_trace.agent_image.credentials import Credentials
from mirrord_trace.agent_image.reference import Reference

# Blobs up to this size go in one PUT; larger ones in PATCH chunks of this size (every
# registry accepts 5 MiB chunks and up; ECR refuses smaller ones except the last).
DEFAULT_CHUNK_SIZE = 32 << 20
_TIMEOUT = (10, 300)  # connect, read (a registry may take a while to commit a large blob)


class RegistryError(Exception):
    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


@dataclass
class PushResult:
    digest: str  # the manifest's, as the registry confirmed it
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # blobs the registry had already


def is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="https://auth",service="registry",scope="..."` -> ("bearer", {...})."""
    scheme, _, rest = header.strip().partition(" ")
    parameters = urllib.request.parse_keqv_list(urllib.request.parse_http_list(rest))
    return scheme.lower(), {key.lower(): value for key, value in parameters.items()}


def _registry_errors(response: requests.Response) -> str:
    try:
        errors = response.json().get("errors") or []
    except ValueError:
        return " ".join(response.text.split())[:200]
    return "; ".join(f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors)


class RegistryClient:
    def __init__(
        self,
        reference: Reference,
        credentials: Credentials | None,
        insecure: bool = False,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        self.reference = reference
        self.credentials = credentials
        self.insecure = insecure
        self.chunk_size = chunk_size
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "mirrord-trace-agent-image"
        self.base = ""
        self._authenticated = False

    def close(self) -> None:
        self.session.close()

    # -- connection and authentication --
    def _ping(self, scheme: str) -> requests.Response:
        return self.session.get(f"{scheme}://{self.reference.api_host}/v2/", timeout=_TIMEOUT)

    def connect(self) -> None:
        """Find the registry's scheme and authenticate for pull and push."""
        host = self.reference.api_host
        schemes = ["http"] if self.insecure else ["https"]
        if not self.insecure and is_loopback(self.reference.host_name):
            schemes.append("http")  # as Docker does: a loopback registry may be plain HTTP
        response = None
        for scheme in schemes:
            try:
                response = self._ping(scheme)
            except requests.exceptions.SSLError as error:
                last = f"TLS failed: {error.__class__.__name__}"
                continue
            except requests.exceptions.ConnectionError as error:
                last = f"cannot connect: {_short(error)}"
                continue
            self.base = f"{scheme}://{host}"
            break
        if response is None:
            hint = "check the registry's address" + (
                "" if self.insecure else "; --insecure for a registry that speaks plain HTTP"
            )
            raise RegistryError(f"registry {host} does not answer ({last})", hint)
        if response.status_code == 401:
            self._authenticate(response.headers.get("WWW-Authenticate", ""))
        elif response.status_code not in (200, 404) and response.status_code >= 400:
            raise RegistryError(
                f"{self.base}/v2/ answered {response.status_code}: {_registry_errors(response)}",
                "is this an OCI/Docker registry?",
            )

    def _authenticate(self, challenge: str) -> None:
        self._authenticated = True
        scheme, parameters = parse_challenge(challenge)
        host = self.reference.registry
        creds = self.credentials
        if scheme == "basic":
            if creds is None or not creds.username:
                raise RegistryError(
                    f"registry {host} needs a user name and password", f"docker login {host}"
                )
            self.session.auth = (creds.username, creds.password)
            return
        if scheme != "bearer" or "realm" not in parameters:
            raise RegistryError(
                f"registry {host} asks for authentication this client does not speak "
                f"({challenge or 'no WWW-Authenticate header'})",
                "push with skopeo or docker instead",
            )
        token = self._token(parameters)
        self.session.headers["Authorization"] = f"Bearer {token}"

    def _token(self, challenge: dict[str, str]) -> str:
        scope = f"repository:{self.reference.repository}:pull,push"
        query = {"scope": scope}
        if "service" in challenge:
            query["service"] = challenge["service"]
        creds = self.credentials
        try:
            if creds is not None and creds.identity_token:
                response = requests.post(
                    challenge["realm"],
                    data={
                        **query,
                        "grant_type": "refresh_token",
                        "refresh_token": creds.identity_token,
                        "client_id": "mirrord-trace",
                    },
                    timeout=_TIMEOUT,
                )
            else:
                auth = (creds.username, creds.password) if creds and creds.username else None
                response = requests.get(
                    challenge["realm"], params=query, auth=auth, timeout=_TIMEOUT
                )
        except requests.exceptions.RequestException as error:
            raise RegistryError(
                f"the token service {challenge['realm']} does not answer ({_short(error)})",
                "check the network path to the registry's token service",
            ) from None
        if response.status_code in (401, 403):
            raise self._refused(f"the token service {challenge['realm']}")
        try:
            body: dict[str, Any] = response.json() if response.ok else {}
        except ValueError:
            body = {}
        token = body.get("token") or body.get("access_token")
        if not token:
            raise RegistryError(
                f"the token service {challenge['realm']} gave no token "
                f"({response.status_code} {_registry_errors(response)})",
                f"docker login {self.reference.registry}",
            )
        return str(token)

    def _refused(self, who: str) -> RegistryError:
        host = self.reference.registry
        source = self.credentials.source if self.credentials else ""
        if source:
            return RegistryError(
                f"{who} refused the credentials from {source}", f"docker login {host} again"
            )
        return RegistryError(
            f"{who} wants credentials and none are configured for {host}",
            f"docker login {host} (mirrord-trace reads ~/.docker/config.json)",
        )

    # -- requests --
    def _send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """One request (bodies are bytes, so it can be sent again). A registry whose /v2/ is
        open to anyone may still challenge a push: then authenticate once, and retry."""
        if not url.startswith(("http://", "https://")):
            url = urllib.parse.urljoin(self.base + "/", url)
        for attempt in range(2):
            try:
                response = self.session.request(method, url, timeout=_TIMEOUT, **kwargs)
            except requests.exceptions.RequestException as error:
                raise RegistryError(
                    f"{method} {url} failed: {_short(error)}", "check the registry and try again"
                ) from None
            if response.status_code != 401 or self._authenticated or attempt:
                break
            self._authenticate(response.headers.get("WWW-Authenticate", ""))
        if response.status_code == 401:
            raise self._refused(f"registry {self.reference.registry}")
        if response.status_code == 403:
            raise RegistryError(
                f"registry {self.reference.registry} denies pushing to "
                f"{self.reference.repository}: {_registry_errors(response)}",
                "check that your account may push to this repository",
            )
        return response

    def _expect(self, response: requests.Response, *statuses: int, what: str) -> None:
        if response.status_code not in statuses:
            raise RegistryError(
                f"{what}: the registry answered {response.status_code} "
                f"{_registry_errors(response)}",
                "see the registry's logs",
            )

    def _repository_url(self, suffix: str) -> str:
        return f"{self.base}/v2/{self.reference.repository}/{suffix}"

    def blob_exists(self, digest: str) -> bool:
        response = self._send("HEAD", self._repository_url(f"blobs/{digest}"))
        return response.status_code == 200

    def upload_blob(self, blob: Descriptor, data: IO[bytes]) -> None:
        what = f"uploading {blob.digest}"
        response = self._send(
            "POST", self._repository_url("blobs/uploads/"), headers={"Content-Length": "0"}
        )
        self._expect(response, 202, what=what)
        location = response.headers["Location"]
        if blob.size > self.chunk_size:
            offset = 0
            while offset < blob.size:
                chunk = data.read(self.chunk_size)
                end = offset + len(chunk)
                response = self._send(
                    "PATCH",
                    location,
                    data=chunk,
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Range": f"{offset}-{end - 1}",
                    },
                )
                self._expect(response, 202, what=f"{what} (bytes {offset}-{end - 1})")
                location, offset = response.headers["Location"], end
            body: bytes | IO[bytes] = b""
        else:
            body = data.read()
        response = self._send(
            "PUT",
            _with_query(location, digest=blob.digest),
            data=body,
            headers={"Content-Type": "application/octet-stream"},
        )
        self._expect(response, 201, what=what)
        confirmed = response.headers.get("Docker-Content-Digest", blob.digest)
        if confirmed != blob.digest:
            raise RegistryError(f"{what}: the registry stored {confirmed} instead", "push again")

    def put_manifest(self, manifest: bytes, media_type: str, tag: str) -> str:
        response = self._send(
            "PUT",
            self._repository_url(f"manifests/{tag}"),
            data=manifest,
            headers={"Content-Type": media_type},
        )
        self._expect(response, 201, 200, what=f"putting the manifest of {tag}")
        return response.headers.get("Docker-Content-Digest", "")

    def push(self, archive: ImageArchive, progress: Callable[[str], None]) -> PushResult:
        self.connect()
        result = PushResult(digest="")
        for blob in archive.blobs():
            if self.blob_exists(blob.digest):
                result.skipped.append(blob.digest)
                progress(f"{blob.digest[:19]}: already in the registry")
                continue
            progress(f"{blob.digest[:19]}: uploading {_size(blob.size)}")
            with archive.open_blob(blob.digest) as data:
                self.upload_blob(blob, data)
            result.uploaded.append(blob.digest)
        media_type = archive.manifest_json["mediaType"]
        digest = self.put_manifest(archive.manifest, media_type, self.reference.tag)
        if digest and digest != archive.manifest_digest:
            raise RegistryError(
                f"the registry stored the manifest as {digest}, not {archive.manifest_digest}",
                "push again",
            )
        result.digest = archive.manifest_digest
        return result


def _with_query(url: str, **extra: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True) + list(extra.items())
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _size(count: int) -> str:
    return f"{count / 1e6:.1f} MB" if count >= 100_000 else f"{count / 1e3:.1f} kB"


def _short(error: Exception) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 160 else text[:157] + "..."
