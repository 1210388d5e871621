"""Kubeconfig files: one per client identity, each with its client certificate inlined by path."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.cluster import layout


def write(path: Path, server: str, client: str, pki: Path = layout.PKI) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "mirrord-trace",
                "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")},
            }
        ],
        "users": [
            {
                "name": client,
                "user": {
                    "client-certificate": str(pki / f"{client}.crt"),
                    "client-key": str(pki / f"{client}.key"),
                },
            }
        ],
        "contexts": [
            {"name": "mirrord-trace", "context": {"cluster": "mirrord-trace", "user": client}}
        ],
        "current-context": "mirrord-trace",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def component(name: str) -> Path:
    return layout.PKI / f"{name}.kubeconfig"
