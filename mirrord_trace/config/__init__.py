"""mirrord-style configuration: read a file, validate it strictly, apply command-line flags.

    cfg = load_config("mirrord.json", CliOverrides(steal=True))
    cfg.feature.fs.mode            # FsMode.READ
    cfg.feature.network.outgoing   # OutgoingConfig(tcp=True, udp=True, ...)

Every problem raises ConfigError, whose str() is one line naming the dotted key, the bad value
and the allowed values, and whose `.hint` says what to do.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mirrord_trace.config.errors import ConfigError, ConfigFileError
from mirrord_trace.config.model import (
    AgentConfig,
    Config,
    DnsConfig,
    EnvConfig,
    FeatureConfig,
    FilterSide,
    FsConfig,
    FsMode,
    HttpFilterConfig,
    IncomingConfig,
    IncomingMode,
    NetworkConfig,
    OutgoingConfig,
    TargetConfig,
    TrafficFilter,
)

if TYPE_CHECKING:
    from mirrord_trace.config.files import read_config_file
    from mirrord_trace.config.filters import AddressFilter, FilterSyntaxError, Protocol
    from mirrord_trace.config.overrides import CliOverrides, apply_overrides
    from mirrord_trace.config.parse import parse_config

# Reading and parsing a file (pathlib, ipaddress, the filter grammar, the validators) is only
# needed when there is a file, and the flags only when one is given: `exec -- PROGRAM` must
# start fast (it is benchmarked), so these names are imported on first use. name -> module.
_ON_FIRST_USE = {
    "CliOverrides": "mirrord_trace.config.overrides",
    "apply_overrides": "mirrord_trace.config.overrides",
    "read_config_file": "mirrord_trace.config.files",
    "AddressFilter": "mirrord_trace.config.filters",
    "FilterSyntaxError": "mirrord_trace.config.filters",
    "Protocol": "mirrord_trace.config.filters",
    "parse_config": "mirrord_trace.config.parse",
}


def __getattr__(name: str) -> Any:
    module_name = _ON_FIRST_USE.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


__all__ = [
    "AddressFilter",
    "AgentConfig",
    "CliOverrides",
    "Config",
    "ConfigError",
    "ConfigFileError",
    "DnsConfig",
    "EnvConfig",
    "FeatureConfig",
    "FilterSide",
    "FilterSyntaxError",
    "FsConfig",
    "FsMode",
    "HttpFilterConfig",
    "IncomingConfig",
    "IncomingMode",
    "NetworkConfig",
    "OutgoingConfig",
    "Protocol",
    "TargetConfig",
    "TrafficFilter",
    "apply_overrides",
    "load_config",
    "parse_config",
    "read_config_file",
]


def load_config(
    path: str | os.PathLike[str] | None = None,
    overrides: CliOverrides | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """The configuration from `path` (defaults if None), the MIRRORD_* variables of `environ`
    (default: this process's) and the command-line flags: mirrord_trace.config.loader."""
    from mirrord_trace.config.loader import load_config as load

    return load(path, overrides, environ=environ)
