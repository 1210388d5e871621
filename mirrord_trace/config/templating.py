"""Configuration files are templates, as in mirrord (which renders them with Tera).

Jinja2 renders them here: Tera's syntax was modelled on Jinja2's, so `{{ key }}`,
`{% if %}`/`{% for %}`/`{% set %}`, `~`, comments and `{% raw %}` mean the same. Where Tera
differs, Tera's meaning is provided:

- functions take keyword arguments: `{{ get_env(name="HOME", default="/root") }}` (an unset
  variable without a default is an error, as in Tera);
- filters are Tera's, with Tera's argument names: `default(value=...)`,
  `replace(from=..., to=...)`, `split(pat=...)`, `join(sep=...)`, `truncate(length=...)`,
  `trim`, `lower`, `upper`, `capitalize`, `title`, `slugify`, `length`, `first`, `last`,
  `reverse`, `json_encode`;
- tests: `defined`, `undefined`, `starting_with(...)`, `ending_with(...)`, `containing(...)`,
  `matching(...)`;
- an undefined variable is an error (Tera: "Variable `x` not found in context").

Anything else Jinja2 does not know (a Tera-only filter, backquoted strings) fails with a
one-line error naming the line. Rendering runs sandboxed: a template cannot reach Python.

Variables: `key` (the session key) and `git_branch` (the checked-out branch; MIRRORD_BRANCH_NAME
overrides it; undefined when there is none, e.g. a detached HEAD).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jinja2.sandbox import SandboxedEnvironment

MARKERS = ("{{", "{%", "{#")
TERA_HINT = "write it in Tera's syntax as mirrord's docs do (see docs/configuration.md)"


class TemplateRenderError(ValueError):
    """The template cannot be rendered; str() is one line (with the line number if known)."""


def is_template(text: str) -> bool:
    return any(marker in text for marker in MARKERS)


def render(text: str, variables: Mapping[str, Any], environ: Mapping[str, str]) -> str:
    """Render `text` with `variables` (key, git_branch); get_env reads `environ`."""
    # Jinja2 is imported here, not at the top: a file that is no template never needs it.
    from jinja2 import TemplateError, TemplateSyntaxError

    environment = _environment(environ)
    try:
        return environment.from_string(text).render(dict(variables))
    except TemplateSyntaxError as error:
        raise TemplateRenderError(
            f"template syntax error at line {error.lineno}: "
            f"{_one_line(error.message or str(error))}"
        ) from None
    except TemplateError as error:
        raise TemplateRenderError(f"template error: {_one_line(_tera_wording(error))}") from None
    except (TypeError, ValueError, re.error) as error:
        raise TemplateRenderError(f"template error: {_one_line(str(error))}") from None


def git_branch(environ: Mapping[str, str], cwd: str | None = None) -> str | None:
    """MIRRORD_BRANCH_NAME, else the branch checked out here; None when there is none."""
    named = environ.get("MIRRORD_BRANCH_NAME")
    if named:
        return named
    import subprocess

    try:
        result = subprocess.run(
            ["git", "symbolic-ref", "--quiet", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=cwd,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None  # no git: as in mirrord, `git_branch` is then undefined
    branch = result.stdout.strip()
    return branch if result.returncode == 0 and branch else None


def _tera_wording(error: Any) -> str:
    message = error.message or str(error)
    match = re.fullmatch(r"'([^']+)' is undefined", message)
    if match:
        return f"Variable `{match.group(1)}` not found in context"
    return message


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _environment(environ: Mapping[str, str]) -> SandboxedEnvironment:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    environment = SandboxedEnvironment(
        undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
    )

    _missing = object()

    def get_env(name: str | None = None, default: Any = _missing) -> Any:
        if not isinstance(name, str):
            raise TypeError('get_env needs name="VARIABLE"')
        if name in environ:
            return environ[name]
        if default is _missing:
            raise TypeError(f"environment variable `{name}` is not set (give default=...)")
        return default

    environment.globals = {"get_env": get_env}
    environment.filters.update(_FILTERS)
    environment.tests.update(_TESTS)
    return environment


def _default(obj: Any, *args: Any, **kwargs: Any) -> Any:
    from jinja2 import Undefined

    fallback = kwargs.get("value", args[0] if args else "")
    return fallback if isinstance(obj, Undefined) else obj


def _replace(value: Any, *args: Any, **kwargs: Any) -> str:
    old = kwargs.get("from", args[0] if args else None)
    new = kwargs.get("to", args[1] if len(args) > 1 else None)
    if not isinstance(old, str) or not isinstance(new, str):
        raise TypeError('replace needs from="..." and to="..."')
    return str(value).replace(old, new)


def _split(value: Any, pat: str | None = None) -> list[str]:
    if pat is None:
        raise TypeError('split needs pat="..."')
    return str(value).split(pat)


def _join(value: Any, sep: str = "") -> str:
    return sep.join(str(item) for item in value)


def _truncate(value: Any, length: int = 255, end: str = "…") -> str:
    text = str(value)
    return text if len(text) <= length else text[:length] + end


def _slugify(value: Any) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(value).lower()).strip("-")


def _json(value: Any, pretty: bool) -> str:
    import json

    return json.dumps(value, indent=2 if pretty else None)


def _capitalize(value: Any) -> str:
    text = str(value)
    return text[:1].upper() + text[1:].lower()


_FILTERS = {
    "default": _default,
    "replace": _replace,
    "split": _split,
    "join": _join,
    "truncate": _truncate,
    "slugify": _slugify,
    "capitalize": _capitalize,
    "trim": lambda value: str(value).strip(),
    "trim_start": lambda value: str(value).lstrip(),
    "trim_end": lambda value: str(value).rstrip(),
    "lower": lambda value: str(value).lower(),
    "upper": lambda value: str(value).upper(),
    "title": lambda value: str(value).title(),
    "length": len,
    "first": lambda value: value[0] if value else "",
    "last": lambda value: value[-1] if value else "",
    "reverse": lambda value: value[::-1],
    "json_encode": lambda value, pretty=False: _json(value, pretty),
}

_TESTS = {
    "starting_with": lambda value, prefix: str(value).startswith(prefix),
    "ending_with": lambda value, suffix: str(value).endswith(suffix),
    "containing": lambda value, item: item in value,
    "matching": lambda value, pattern: re.search(pattern, str(value)) is not None,
}
