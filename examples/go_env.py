"""The environment that lets `go build` / `go run` work offline with Debian's Go 1.19.

examples/Makefile sets the same variables for its builds; tests and the demo use this to run
`go run .` in examples/go-run-module without network access or a writable $HOME.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def offline_go_environment(
    build_dir: Path, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """`base` (default: os.environ) plus the Go settings, with caches kept under build_dir."""
    environment = dict(os.environ if base is None else base)
    environment.update(
        CGO_ENABLED="0",
        GO111MODULE="on",
        GOFLAGS="-mod=mod -buildvcs=false",
        GOPROXY="off",
        GOSUMDB="off",
        GOENV="off",
        GOTOOLCHAIN="local",
        GOCACHE=str(build_dir / "go-cache"),
        GOPATH=str(build_dir / "go-path"),
    )
    return environment
