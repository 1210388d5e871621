"""Reading a configuration file: JSON, YAML or TOML, chosen by the file's extension.

A file without an extension is read as JSON, as mirrord does (heredocs, process
substitution); `-` is standard input, also JSON. The text is a template (see
mirrord_trace.config.templating), rendered between reading and parsing. PyYAML is imported
only when a YAML file is read: it is slow to import and the common path (no config file) must
start fast.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mirrord_trace.config.errors import ConfigFileError

FORMATS = {".json": "json", ".yaml": "yaml", ".yml": "yaml", ".toml": "toml", "": "json"}
_FILE_HINT = "check the path given to -f/--config-file"


STDIN = "-"


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Return the file's top-level mapping (not rendered); ConfigFileError on any problem."""
    text, kind = read_config_text(path)
    return parse_document(text, kind, os.fspath(path))


def file_kind(path: str | os.PathLike[str]) -> str:
    """json, yaml or toml, from the extension; ConfigFileError for any other."""
    shown = os.fspath(path)
    if shown == STDIN:
        return "json"
    suffix = Path(shown).suffix.lower()
    kind = FORMATS.get(suffix)
    if kind is None:
        raise ConfigFileError(
            shown,
            f"unknown file type {suffix!r}",
            "use a .json, .yaml, .yml or .toml file",
        )
    return kind


def read_config_text(path: str | os.PathLike[str]) -> tuple[str, str]:
    """-> (the file's text, its kind); `-` reads standard input."""
    shown = os.fspath(path)
    kind = file_kind(path)
    if shown == STDIN:
        import sys

        try:
            return sys.stdin.read(), kind
        except UnicodeDecodeError as error:
            raise ConfigFileError(
                "standard input", f"not UTF-8 text (byte {error.start})", "send UTF-8 text"
            ) from None
    try:
        text = Path(shown).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigFileError(shown, "no such file", _FILE_HINT) from None
    except IsADirectoryError:
        raise ConfigFileError(shown, "is a directory, not a file", _FILE_HINT) from None
    except PermissionError:
        raise ConfigFileError(shown, "permission denied", "make the file readable") from None
    except UnicodeDecodeError as error:
        raise ConfigFileError(
            shown, f"not UTF-8 text (byte {error.start})", "save the file as UTF-8"
        ) from None
    except OSError as error:
        raise ConfigFileError(shown, error.strerror or str(error), _FILE_HINT) from None
    return text, kind


def parse_document(text: str, kind: str, shown: str) -> dict[str, Any]:
    """The top-level mapping of a JSON, YAML or TOML text."""
    try:
        document = _PARSERS[kind](text, shown)
    except RecursionError:
        raise ConfigFileError(
            shown, f"invalid {kind.upper()}: nested too deeply", "flatten the configuration"
        ) from None
    if document is None and kind == "yaml":
        document = {}  # an empty YAML file is an empty configuration
    if not isinstance(document, dict):
        raise ConfigFileError(
            shown,
            f"the top level is a {type(document).__name__}, not a mapping",
            "write the configuration as an object of keys",
        )
    return document


def _parse_json(text: str, path: str) -> Any:
    import json

    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise _syntax_error(path, "JSON", error.msg, error.lineno, error.colno) from None


def _parse_toml(text: str, path: str) -> Any:
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        # The message already carries "(at line L, column C)".
        raise ConfigFileError(
            path, f"invalid TOML: {_one_line(str(error))}", "fix the syntax error"
        ) from None


def _parse_yaml(text: str, path: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        reason = error.problem or error.context or "syntax error"
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
        raise _syntax_error(path, "YAML", reason, line, column) from None
    except yaml.YAMLError as error:
        raise ConfigFileError(
            path, f"invalid YAML: {_one_line(str(error))}", "fix the syntax error"
        ) from None


def _syntax_error(path: str, kind: str, reason: str, line: int, column: int) -> ConfigFileError:
    where = f" at line {line}, column {column}" if line else ""
    return ConfigFileError(
        path, f"invalid {kind}{where}: {_one_line(reason)}", "fix the syntax error"
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())


_PARSERS = {"json": _parse_json, "toml": _parse_toml, "yaml": _parse_yaml}
