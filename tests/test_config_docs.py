"""docs/configuration.md and the code agree: one heading per accepted key, documented defaults
are the real defaults, every example is a valid configuration, flags and the never-imported
environment variables are all listed."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from mirrord_trace.cli import exec_command
from mirrord_trace.config import Config, load_config, parse_config
from mirrord_trace.config.parse import all_keys
from mirrord_trace.env import NEVER_IMPORTED

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
TEXT = DOC.read_text()
KEY_HEADING = re.compile(r"^### `([a-z0-9_.]+)`$", re.MULTILINE)
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def key_sections() -> dict[str, str]:
    """dotted key -> the text under its heading."""
    matches = list(KEY_HEADING.finditer(TEXT))
    sections = {}
    for match, following in zip(matches, [*matches[1:], None], strict=True):
        end = following.start() if following is not None else len(TEXT)
        sections[match.group(1)] = TEXT[match.end() : end]
    return sections


def nested(key: str, value: Any) -> dict[str, Any]:
    for name in reversed(key.split(".")):
        value = {name: value}
    return value


def test_every_accepted_key_has_exactly_one_heading_and_no_other_keys_do() -> None:
    headings = KEY_HEADING.findall(TEXT)
    assert len(headings) == len(set(headings)), "a key is documented twice"
    assert set(headings) == set(all_keys())


@pytest.mark.parametrize("key", all_keys())
def test_the_documented_default_is_the_default(key: str) -> None:
    section = key_sections()[key]
    match = re.search(r"^- \*\*Default:\*\* `([^`]*)`", section, re.MULTILINE)
    assert match, f"{key}: no '- **Default:** `...`' line"
    default = json.loads(match.group(1))
    if default is None and key.rsplit(".", 1)[-1] in ("remote", "local"):
        # One side of a filter: "unset" means no filter at all (the filter's own default).
        key = key.rsplit(".", 1)[0]
    assert parse_config(nested(key, default)) == Config(), f"{key}: documented default differs"
    assert re.search(r"^- \*\*Type:\*\* ", section, re.MULTILINE), f"{key}: no type line"


@pytest.mark.parametrize("key", all_keys())
def test_each_key_has_an_example_that_uses_it(key: str) -> None:
    blocks = [body for lang, body in FENCE.findall(key_sections()[key]) if lang == "json"]
    assert blocks, f"{key}: no JSON example"
    for body in blocks:
        document = json.loads(body)
        parse_config(document)
        value: Any = document
        for name in key.split("."):
            assert isinstance(value, dict) and name in value, f"{key}: example does not set it"
            value = value[name]


def test_every_example_in_every_format_is_a_valid_configuration(tmp_path: Path) -> None:
    loaders = {"json": json.loads, "yaml": yaml.safe_load, "toml": tomllib.loads}
    parsed: dict[str, list[Config]] = {name: [] for name in loaders}
    templates = 0
    for lang, body in FENCE.findall(TEXT):
        if lang == "json" and "{{" in body:
            # A template is valid once rendered, as in mirrord: load it as a file.
            path = tmp_path / f"template{templates}.json"
            path.write_text(body)
            cfg = load_config(path, environ={"MIRRORD_BRANCH_NAME": "main"})
            assert cfg.key == "main" and str(cfg.target.path) == "pod/fallback"
            templates += 1
        elif lang in loaders:
            parsed[lang].append(parse_config(loaders[lang](body)))
    assert templates == 1
    assert all(parsed.values())
    # The complete example is given in all three formats, and they mean the same.
    assert parsed["json"][0] == parsed["yaml"][0] == parsed["toml"][0]


def test_every_exec_flag_is_documented() -> None:
    flags = [
        name
        for param in exec_command.params
        if isinstance(param, click.Option)
        for name in param.opts
        if name != "--help"
    ]
    assert "--steal" in flags and "-t" in flags
    for flag in flags:
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", TEXT), f"{flag} undocumented"


def test_the_never_imported_variables_are_all_listed() -> None:
    section = key_sections()["feature.env"]
    for name in NEVER_IMPORTED:
        assert f"`{name}`" in section, name
    listed = re.findall(r"`([A-Za-z_*]+)`", section.split("**Never imported**")[1])
    assert set(listed) >= set(NEVER_IMPORTED)
