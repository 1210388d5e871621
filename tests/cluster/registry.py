"""The loopback image registry (Debian's docker-registry, the CNCF distribution registry), its
storage under build/cluster/registry: the cluster pulls the agent image from it."""

from __future__ import annotations

import time
import urllib.request

from tests.cluster import layout, processes

NAME = "registry"


def _config() -> str:
    return f"""version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {layout.REGISTRY_DATA}
  delete:
    enabled: true
http:
  addr: {layout.REGISTRY}
"""


def start() -> None:
    if processes.running(NAME):
        return
    layout.REGISTRY_DATA.mkdir(parents=True, exist_ok=True)
    config = layout.STATE / "registry.yml"
    config.write_text(_config())
    processes.start(NAME, ["docker-registry", "serve", str(config)])
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://{layout.REGISTRY}/v2/", timeout=2):
                return
        except OSError as error:
            if time.monotonic() > deadline or not processes.running(NAME):
                raise RuntimeError(
                    f"registry on {layout.REGISTRY} did not answer ({error}):\n"
                    + processes.log_tail(NAME)
                ) from error
            time.sleep(0.2)
