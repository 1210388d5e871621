"""Which agent image the agent's pod runs, and what to tell the user when there is none or
the node cannot pull it.

There is no public agent image to fall back on: each user builds it and pushes it to a
registry their nodes pull from (`mirrord-trace agent-image push`), and names it with
agent.image, or MIRRORD_AGENT_IMAGE when the configuration does not. Without either,
`exec` stops before it creates anything in the cluster.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from mirrord_trace import __version__
from mirrord_trace.kube.errors import DOCS, ImagePullFailed, NoAgentImage

AGENT_IMAGE_ENV = "MIRRORD_AGENT_IMAGE"
EXAMPLE_IMAGE = f"REGISTRY/mirrord-trace-agent:{__version__}"
_DOCS = f"{DOCS}#the-agent-image"


def push_command(image: str) -> str:
    return f"mirrord-trace agent-image push {image}"


def agent_image(configured: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """agent.image, else $MIRRORD_AGENT_IMAGE; NoAgentImage when neither is set."""
    image = configured or environ.get(AGENT_IMAGE_ENV, "").strip()
    if image:
        return image
    raise NoAgentImage(
        "no agent image is set (mirrord-trace has no public agent image)",
        f"build and push it to a registry your nodes pull from with "
        f"'{push_command(EXAMPLE_IMAGE)}', then set agent.image or {AGENT_IMAGE_ENV} "
        f"to that name; see {_DOCS}",
    )


def pull_failed(image: str, reason: str, message: str) -> ImagePullFailed:
    return ImagePullFailed(
        f"the node cannot pull the agent image {image} ({reason}"
        + (f": {message})" if message else ")"),
        f"build and push it with '{push_command(image)}' (credentials from docker login), "
        f"or set agent.image to an image the node can pull; a private registry also needs "
        f"pull credentials on the node; see {_DOCS}",
    )
