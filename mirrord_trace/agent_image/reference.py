"""Image references as Docker and containerd read them: `[REGISTRY/]PATH[:TAG]`.

The first component is a registry when it has a dot or a port, or is `localhost`; otherwise the
image is on Docker Hub (`docker.io`, one-component paths under `library/`). A pod that names
`mirrord-trace-agent:0.1.0` gets `docker.io/library/mirrord-trace-agent:0.1.0`, so an image
loaded into a node (kind, k3d) must carry that normalised name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
# ~/.docker/config.json keeps Docker Hub's credentials under the old index address.
DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_HOST = re.compile(r"(?:[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?")


class ReferenceError(ValueError):
    """Not an image reference; the message says which part is wrong."""


@dataclass(frozen=True, slots=True)
class Reference:
    registry: str  # as written (docker.io for Docker Hub), with its port
    repository: str  # the path inside the registry, e.g. team/mirrord-trace-agent
    tag: str

    def normalized(self) -> str:
        return f"{self.registry}/{self.repository}:{self.tag}"

    def familiar(self) -> str:
        """The short form Docker prints (and a pod may use)."""
        if self.registry != DOCKER_HUB:
            return self.normalized()
        return f"{self.repository.removeprefix('library/')}:{self.tag}"

    @property
    def api_host(self) -> str:
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def host_name(self) -> str:
        """The registry's host without its port."""
        host = self.registry
        if host.startswith("["):
            return host[1 : host.index("]")]
        return host.rsplit(":", 1)[0] if ":" in host else host


def parse_reference(text: str) -> Reference:
    """`registry.example:5000/team/agent:0.1.0` -> its parts; the tag defaults to `latest`.
    A digest (`@sha256:...`) is refused: a push names what it creates by a tag."""
    if "@" in text:
        raise ReferenceError(f"'{text}' names a digest; a push needs a tag (NAME:TAG)")
    registry, rest = DOCKER_HUB, text
    first, _, remainder = text.partition("/")
    if remainder and ("." in first or ":" in first or first == "localhost" or "[" in first):
        registry, rest = first, remainder
        if not _HOST.fullmatch(registry):
            raise ReferenceError(f"'{registry}' in '{text}' is not a registry host[:port]")
    path, _, tag = rest.rpartition(":") if ":" in rest else (rest, "", "latest")
    if not _PATH.fullmatch(path):
        raise ReferenceError(
            f"'{path}' in '{text}' is not a repository name "
            "(lowercase letters, digits and . _ - separators, components joined by /)"
        )
    if not _TAG.fullmatch(tag):
        raise ReferenceError(f"'{tag}' in '{text}' is not a tag (letters, digits, . _ -)")
    if registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    return Reference(registry, path, tag)
