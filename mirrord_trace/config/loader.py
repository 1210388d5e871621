"""From a file (or none), MIRRORD_* variables and flags to the validated Config, as mirrord does:

1. the file: MIRRORD_CONFIG_FILE when no -f is given; `-` is standard input;
2. the session key: -k/--key, else MIRRORD_KEY, else the file's root `key` (itself rendered,
   read before the rest, as mirrord does), else a generated one;
3. the file's text is rendered as a template (`{{ key }}`, `{{ get_env(name="X") }}`, ...);
4. MIRRORD_* variables are set over the file's keys, then the flags over both;
5. the whole is validated (mirrord_trace.config.parse), and the typed flags applied.

An error names where the bad value came from: the file, the variable or the flag.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mirrord_trace.config.errors import ConfigError, ConfigFileError
from mirrord_trace.config.model import Config

if TYPE_CHECKING:
    from mirrord_trace.config.overrides import CliOverrides

_TEMPLATE_HINT = "fix the template; mirrord-trace renders Tera's syntax (docs/configuration.md)"


def load_config(
    path: str | os.PathLike[str] | None = None,
    overrides: CliOverrides | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """The configuration from `path` (or MIRRORD_CONFIG_FILE, or defaults), the MIRRORD_*
    variables of `environ` (default: this process's) and the command-line flags."""
    environ = os.environ if environ is None else environ
    # Fast path (benchmarked start-up): no file, no variable, no flag: the defaults.
    mirrord_vars = any(name.startswith("MIRRORD_") for name in environ)
    path_from_variable = False
    if path is None and mirrord_vars:
        from mirrord_trace.config.environ import CONFIG_FILE_VARIABLE

        path = environ.get(CONFIG_FILE_VARIABLE) or None
        path_from_variable = path is not None
    if path is None and not mirrord_vars and overrides is None:
        return Config()

    settings: list[tuple[str, Any, str]] = []
    if mirrord_vars:
        from mirrord_trace.config.environ import settings_from_environment

        settings += settings_from_environment(environ)
    if overrides is not None:
        settings += list(overrides.settings)
    provided_key = _provided_key(overrides, environ)

    raw: dict[str, Any] = {}
    shown = None
    if path is not None:
        shown = os.fspath(path)
        try:
            raw = _read_rendered(path, provided_key, environ)
        except ConfigFileError as error:
            if path_from_variable and error.path == shown:
                error.source_hint = "check the path in the MIRRORD_CONFIG_FILE variable"
            raise
        if provided_key is None and isinstance(raw.get("key"), str):
            provided_key = raw["key"]
    sources: dict[str, str] = {}
    if mirrord_vars:
        from mirrord_trace.config.environ import is_set, settings_from_environment

        # The agent image variables fill in only what the file leaves out (see environ).
        settings[:0] = [
            setting
            for setting in settings_from_environment(environ, fallbacks=True)
            if not is_set(raw, "agent.image")
        ]
    if settings:
        from mirrord_trace.config.environ import apply_settings

        sources = apply_settings(raw, settings)
    if provided_key is not None:
        raw["key"] = provided_key

    from mirrord_trace.config.parse import parse_config

    try:
        cfg = parse_config(raw)
    except ConfigError as error:
        error.source = _source_of(error.key, sources) or shown
        raise
    except RecursionError:
        raise ConfigFileError(
            shown or "configuration", "nested too deeply", "flatten the configuration"
        ) from None
    if overrides is None:
        return cfg
    from mirrord_trace.config.overrides import apply_overrides

    return apply_overrides(cfg, overrides)


def _provided_key(overrides: CliOverrides | None, environ: Mapping[str, str]) -> str | None:
    if overrides is not None and overrides.key is not None:
        return overrides.key
    return environ.get("MIRRORD_KEY") or None


def _read_rendered(
    path: str | os.PathLike[str], provided_key: str | None, environ: Mapping[str, str]
) -> dict[str, Any]:
    from mirrord_trace.config.files import parse_document, read_config_text

    shown = os.fspath(path)
    text, kind = read_config_text(path)
    from mirrord_trace.config.templating import is_template

    if not is_template(text):
        return parse_document(text, kind, shown)
    from mirrord_trace.config.templating import TemplateRenderError, git_branch, render

    variables: dict[str, Any] = {}
    if "git_branch" in text:
        branch = git_branch(environ)
        if branch is not None:
            variables["git_branch"] = branch
    try:
        key = provided_key
        if key is None:
            key = _file_key(text, kind, shown)
            if key is not None:
                key = render(key, variables, environ)
        variables["key"] = key if key is not None else _generated_key()
        rendered = render(text, variables, environ)
    except TemplateRenderError as error:
        raise ConfigFileError(shown, str(error), _TEMPLATE_HINT) from None
    document = parse_document(rendered, kind, shown)
    if provided_key is None and key is not None:
        document["key"] = key
    return document


def _file_key(text: str, kind: str, shown: str) -> str | None:
    """The root `key` as written (before rendering); None when absent or unreadable, as in
    mirrord, where the rest of the file is parsed only once rendered."""
    from mirrord_trace.config.files import parse_document

    try:
        key = parse_document(text, kind, shown).get("key")
    except ConfigError:
        return None
    return key if isinstance(key, str) else None


def _generated_key() -> str:
    import secrets  # only when a template needs a key and none was given

    return "mirrord-trace-" + secrets.token_hex(6)


def _source_of(key: str, sources: Mapping[str, str]) -> str | None:
    """The variable or flag that set `key` (or a section containing it)."""
    for set_key, source in sources.items():
        if key == set_key or key.startswith(set_key + ".") or set_key.startswith(key + "."):
            return source
    return None
