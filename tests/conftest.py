"""Shared test set-up: hypothesis profiles and the example binaries built by `make examples`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.sandbox_fixtures import fresh_sandbox_name, sandbox  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
BIN_DIR = ROOT / "build" / "bin"

# `make test` stays short by default; HYPOTHESIS_PROFILE=long runs the thorough version.
settings.register_profile(
    "default", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "long", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def example_binary(name: str) -> Path:
    """Path of an example binary; fails (not skips) when `make examples` has not built it."""
    path = BIN_DIR / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make examples` (part of `make test`)")
    return path


@pytest.fixture
def bins():
    return example_binary
