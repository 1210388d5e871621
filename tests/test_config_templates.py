"""Configuration files are templates, as in mirrord (Tera): {{ key }}, get_env, git_branch,
Tera's filters and tests; what Jinja2 would read differently is Tera's meaning or an error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mirrord_trace.config import ConfigError, load_config
from mirrord_trace.config.overrides import CliOverrides

SESSION_FILTER = (
    '{"feature": {"network": {"incoming": {"mode": "steal", "http_filter": '
    '{"header_filter": "^baggage: .*mirrord-session={{ key }}.*$"}}}}}'
)


def write(tmp_path: Path, text: str, name: str = "mirrord.json") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def header_filter(
    path: Path, overrides: CliOverrides | None = None, *, environ: dict[str, str]
) -> str:
    cfg = load_config(path, overrides, environ=environ)
    wire = cfg.feature.network.incoming.http_filter.wire
    assert wire is not None
    return str(wire["header"])


def test_key_from_the_file_flag_and_variable_in_mirrords_order(tmp_path: Path) -> None:
    path = write(tmp_path, SESSION_FILTER[:-1] + ', "key": "from-file"}')
    assert header_filter(path, environ={}) == "^baggage: .*mirrord-session=from-file.*$"
    assert "=from-env." in header_filter(path, environ={"MIRRORD_KEY": "from-env"})
    flag = CliOverrides(key="from-flag")
    assert "=from-flag." in header_filter(path, CliOverrides(key="from-flag"), environ={})
    assert load_config(path, flag, environ={"MIRRORD_KEY": "x"}).key == "from-flag"


def test_without_a_key_one_is_generated_and_the_filter_is_never_literal(tmp_path: Path) -> None:
    path = write(tmp_path, SESSION_FILTER)
    first = header_filter(path, environ={})
    assert "{{" not in first and "mirrord-session=mirrord-trace-" in first
    assert header_filter(path, environ={}) != first  # a new session, a new key


def test_get_env_with_and_without_default(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '{"target": "{{ get_env(name="TARGET", default="pod/fallback") }}",'
        ' "feature": {"env": {"override": {"HOME_COPY": "{{ get_env(name=\'HOME\') }}"}}}}',
    )
    cfg = load_config(path, environ={"HOME": "/home/me"})
    assert str(cfg.target.path) == "pod/fallback"
    assert cfg.feature.env.override["HOME_COPY"] == "/home/me"
    cfg = load_config(path, environ={"TARGET": "deployment/web", "HOME": "/h"})
    assert str(cfg.target.path) == "deployment/web"
    with pytest.raises(ConfigError, match="environment variable `HOME` is not set"):
        load_config(path, environ={})


def test_the_root_key_is_itself_a_template_and_git_branch_comes_from_git(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", "-b", "feature-x", str(tmp_path)], check=True)
    path = write(tmp_path, SESSION_FILTER[:-1] + ', "key": "{{ git_branch }}"}')
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from mirrord_trace.config import load_config; "
            "print(load_config(sys.argv[1], environ={}).key)",
            str(path),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    assert run.stdout.strip() == "feature-x"
    assert load_config(path, environ={"MIRRORD_BRANCH_NAME": "main"}).key == "main"


def test_an_undefined_git_branch_is_an_error_unless_defaulted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no git repository here: no branch
    path = write(tmp_path, '{"key": "{{ git_branch }}"}')
    environ = {"MIRRORD_BRANCH_NAME": ""}
    # Tera's error, not an empty key (a filter on an empty key would match nothing).
    with pytest.raises(ConfigError, match="Variable `git_branch` not found in context"):
        load_config(path, environ=environ)
    path = write(tmp_path, '{"key": "{{ git_branch | default(value=\'shared\') }}"}')
    assert load_config(path, environ=environ).key in ("shared",)


def test_teras_filters_tests_and_conditionals(tmp_path: Path) -> None:
    text = (
        "{\"key\": \"{{ get_env(name='USER') | lower | replace(from='.', to='-') }}\","
        " \"target\": \"{% if get_env(name='STAGE', default='dev') is starting_with('prod') %}"
        "deployment/web{% else %}pod/web-{{ get_env(name='STAGE', default='dev') | upper | "
        'lower }}{% endif %}",'
        ' "feature": {"env": {"include": "{{ [\'A\', \'B\'] | join(sep=\';\') }}"}}}'
    )
    path = write(tmp_path, text)
    cfg = load_config(path, environ={"USER": "Jane.Doe"})
    assert cfg.key == "jane-doe"
    assert str(cfg.target.path) == "pod/web-dev"
    assert cfg.feature.env.include == ("A", "B")
    cfg = load_config(path, environ={"USER": "x", "STAGE": "production"})
    assert str(cfg.target.path) == "deployment/web"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('{"key": "{{ key | no_such_filter }}"}', "No filter named 'no_such_filter'"),
        ('{"key": "{{ `backquoted` }}"}', "template syntax error at line 1"),
        ('{"key": "{% if %}"}', "template syntax error at line 1"),
        ('{"key": "{{ get_env() }}"}', 'get_env needs name="VARIABLE"'),
        ('{"key": "{{ undefined_thing }}"}', "Variable `undefined_thing` not found"),
        ('{"key": "{{ "".__class__.__mro__ }}"}', "template error"),
    ],
)
def test_template_problems_are_one_line_errors(tmp_path: Path, text: str, fragment: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert fragment in str(caught.value) and "\n" not in str(caught.value)
    assert "Tera" in caught.value.hint


def test_yaml_and_toml_are_templates_too(tmp_path: Path) -> None:
    yaml_path = write(tmp_path, "target: \"{{ get_env(name='T') }}\"\n", "c.yaml")
    toml_path = write(tmp_path, "target = \"{{ get_env(name='T') }}\"\n", "c.toml")
    for path in (yaml_path, toml_path):
        assert str(load_config(path, environ={"T": "pod/web"}).target.path) == "pod/web"


template_pieces = st.lists(
    st.sampled_from(
        [
            "{{",
            "}}",
            "{%",
            "%}",
            "{#",
            "#}",
            " key ",
            " if ",
            " endif ",
            " for x in ",
            "|",
            " default(value='a') ",
            "get_env(name='HOME')",
            "'",
            '"',
            "(",
            ")",
            "~",
            "x",
            "\\",
            " raw ",
            " endraw ",
            "[",
            "]",
            ".",
            "__class__",
            "1",
            "-",
        ]
    ),
    max_size=25,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(text=template_pieces)
def test_any_template_renders_or_is_a_one_line_error(
    tmp_path_factory: pytest.TempPathFactory, text: str
) -> None:
    path = tmp_path_factory.mktemp("tpl") / "mirrord.json"
    path.write_text(json.dumps({"key": "k", "feature": {"env": {"override": {"A": text}}}}))
    try:
        load_config(path, environ={"HOME": "/h"})
    except ConfigError as error:
        assert "\n" not in str(error) and str(error).startswith("config error: ")
