"""mirrord-style configuration: read a file, validate it strictly, apply command-line flags.

    cfg = load_config("mirrord.json", CliOverrides(steal=True))
    cfg.feature.fs.mode            # FsMode.READ
    cfg.feature.network.outgoing   # OutgoingConfig(tcp=True, udp=True, ...)

Every problem raises ConfigError, whose str() is one line naming the dotted key, the bad value
and the allowed values, and whose `.hint` says what to do.
"""

from __future__ import annotations

import os

from mirrord_trace.config.errors import ConfigError, ConfigFileError
from mirrord_trace.config.files import read_config_file
from mirrord_trace.config.filters import AddressFilter, FilterSyntaxError, Protocol
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
from mirrord_trace.config.overrides import CliOverrides, apply_overrides
from mirrord_trace.config.parse import parse_config

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
    path: str | os.PathLike[str] | None = None, overrides: CliOverrides | None = None
) -> Config:
    """The configuration from `path` (defaults if None) with the command-line flags applied."""
    cfg = Config()
    if path is not None:
        raw = read_config_file(path)
        try:
            cfg = parse_config(raw)
        except ConfigError as error:
            error.source = os.fspath(path)
            raise
    return apply_overrides(cfg, overrides) if overrides is not None else cfg
