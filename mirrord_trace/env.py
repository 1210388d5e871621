"""The program's environment: the local one, plus the target's variables, as mirrord does it.

Order of operations:
  1. start from the local environment, minus the names in `unset` (case-insensitive);
  2. import the target's variables: all of them, or only those matching `include`; minus those
     matching `exclude`; never those in NEVER_IMPORTED (they describe the target's machine -
     paths, home, language installs - and would break the local program);
     `mapping` then replaces the value of each imported variable whose name one of its regexes
     finds (the first that does);
  3. the variables of `env_file` (a .env file, read with python-dotenv) win over the target's;
  4. set `override` last: it wins over everything, including NEVER_IMPORTED names.
CLI -s/-x replace `include`/`exclude` from the file. `feature.env: false` imports nothing.

Patterns are matched against the whole name, case-sensitively; `*` matches any run of
characters (also none) and `?` exactly one; every other character stands for itself.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping

from mirrord_trace.config.model import EnvConfig

# mirrord's agent list (mirrord/agent/src/env.rs) plus the dynamic loader's and Go/Node/Python
# installation variables, which are just as machine-specific.
NEVER_IMPORTED: tuple[str, ...] = (
    # shell and user
    "PATH", "HOME", "HOMEPATH", "PWD", "OLDPWD", "TEMP", "TMP", "TMPDIR",
    # dynamic loader
    "LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT",
    # Python
    "PYTHONPATH", "PYTHONHOME",
    # Go
    "GOPATH", "GOROOT", "GOMODCACHE",
    # Node
    "NODE_PATH",
    # JVM
    "CLASSPATH", "JAVA_HOME", "JAVA_EXE", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "CATALINA_HOME",
    # Ruby
    "GEM_HOME", "GEM_PATH", "RUBYLIB", "RUBYOPT", "BUNDLE_*", "BUNDLER_*",
    # .NET
    "DOTNET_STARTUP_HOOKS", "DOTNET_EnableDiagnostics",
    # logging of the tools themselves
    "RUST_LOG", "MIRRORD_LOG",
)  # fmt: skip


class EnvPatternError(ValueError):
    """A -s/-x value that is not a `;`-separated list of variable-name patterns."""


def split_patterns(text: str) -> tuple[str, ...]:
    """`"A;B_*; C"` -> ("A", "B_*", "C"); empty items are dropped, as mirrord does."""
    patterns = tuple(part.strip() for part in text.split(";") if part.strip())
    for pattern in patterns:
        if "=" in pattern or "\0" in pattern:
            raise EnvPatternError(f"{pattern!r} is not a variable-name pattern (no '=' allowed)")
    return patterns


def compile_patterns(patterns: Iterable[str]) -> re.Pattern[str]:
    """One regex matching any of `patterns` (a never-matching one for none)."""
    alternatives = [_wildcard_to_regex(pattern) for pattern in patterns]
    if not alternatives:
        return re.compile(r"(?!)")
    return re.compile("|".join(f"(?:{alternative})" for alternative in alternatives), re.DOTALL)


def _wildcard_to_regex(pattern: str) -> str:
    # fnmatch.translate would also give [...] a meaning; mirrord's wildcards are only * and ?.
    return "".join(
        ".*" if char == "*" else "." if char == "?" else re.escape(char) for char in pattern
    )


@functools.cache
def _never_imported() -> re.Pattern[str]:
    return compile_patterns(NEVER_IMPORTED)


class _Selector:
    def __init__(self, include: tuple[str, ...] | None, exclude: tuple[str, ...]) -> None:
        # mirrord treats an empty include list like no include list: everything.
        self._include = compile_patterns(include) if include else None
        self._exclude = compile_patterns(exclude)

    def imports(self, name: str) -> bool:
        if _never_imported().fullmatch(name) or self._exclude.fullmatch(name):
            return False
        return self._include is None or self._include.fullmatch(name) is not None


def build_program_env(
    local: Mapping[str, str],
    remote: Mapping[str, str],
    cfg: EnvConfig,
    *,
    cli_include: str | None,
    cli_exclude: str | None,
    env_file_vars: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment the program is started with (see the module docstring for the rules).

    `env_file_vars`: the variables of cfg.env_file (read_env_file), read before the agent
    starts so that a missing file stops nothing half-way."""
    unset = {name.lower() for name in cfg.unset}
    env = {name: value for name, value in local.items() if name.lower() not in unset}
    if cfg.enabled and remote:
        include = split_patterns(cli_include) if cli_include is not None else cfg.include
        exclude = split_patterns(cli_exclude) if cli_exclude is not None else cfg.exclude
        selector = _Selector(include, exclude)
        imported = {name: value for name, value in remote.items() if selector.imports(name)}
        env.update(_remapped(imported, cfg.mapping))
    env.update(env_file_vars or {})
    env.update(cfg.override)
    return env


def _remapped(
    variables: dict[str, str], mapping: tuple[tuple[re.Pattern[str], str], ...]
) -> dict[str, str]:
    for name in variables:
        for pattern, value in mapping:
            if pattern.search(name):
                variables[name] = value
                break
    return variables


class EnvFileError(ValueError):
    """The env file cannot be read; str() is one line."""


def read_env_file(path: str) -> dict[str, str]:
    """The variables of a .env file (`NAME=value`, quotes, comments, `${OTHER}`)."""
    from dotenv import dotenv_values

    try:
        with open(path, encoding="utf-8") as stream:
            values = dotenv_values(stream=stream, interpolate=True)
    except OSError as error:
        raise EnvFileError(f"env file {path}: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise EnvFileError(f"env file {path}: not UTF-8 text (byte {error.start})") from None
    # A bare `NAME` line (no '=') has no value: like an unset variable, it sets nothing.
    return {name: value for name, value in values.items() if value is not None}
