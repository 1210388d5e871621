"""Configuration errors: each renders as one line naming the dotted key, the bad value and
what is allowed."""

from __future__ import annotations


class ConfigError(Exception):
    """A key of the configuration has a value we cannot accept.

    `key` is the full dotted key (`feature.fs.mode`); `source` is set by the loader to the file
    the value came from, so the hint can say where to fix it.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(key, message)
        self.key = key
        self.message = message
        self.source: str | None = None

    def __str__(self) -> str:
        where = f"{self.key}: " if self.key else ""
        return f"config error: {where}{self.message}"

    @property
    def hint(self) -> str:
        where = f" in {self.source}" if self.source else ""
        return f"fix {self.key or 'the configuration'}{where}"


class ConfigFileError(ConfigError):
    """The configuration file is missing, unreadable, or not JSON/YAML/TOML."""

    def __init__(self, path: str, reason: str, hint: str) -> None:
        super().__init__("", f"{path}: {reason}")
        self.path = path
        self._hint = hint
        # Set when the path came from somewhere else than -f (MIRRORD_CONFIG_FILE).
        self.source_hint: str | None = None

    @property
    def hint(self) -> str:
        if self.source_hint is not None and self._hint.startswith("check the path"):
            return self.source_hint
        return self._hint
