"""The program's environment: local variables, the target's variables selected by
include/exclude (and -s/-x), the fixed set that is never imported, override last."""

from __future__ import annotations

import fnmatch
from types import MappingProxyType

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from mirrord_trace.config import EnvConfig, parse_config
from mirrord_trace.env import NEVER_IMPORTED, EnvPatternError, build_program_env, split_patterns

LOCAL = {"PATH": "/usr/local/bin:/usr/bin", "HOME": "/home/dev", "EDITOR": "vim", "SHARED": "l"}
REMOTE = {
    "PATH": "/app/bin",
    "HOME": "/root",
    "PWD": "/app",
    "PYTHONPATH": "/app/lib",
    "LD_PRELOAD": "/lib/evil.so",
    "JAVA_HOME": "/opt/jdk",
    "BUNDLE_PATH": "/gems",
    "DB_HOST": "db.internal",
    "DB_PASSWORD": "s3cret",
    "API_KEY": "k",
    "SHARED": "r",
}


def env_for(
    cfg: EnvConfig,
    *,
    local: dict[str, str] = LOCAL,
    remote: dict[str, str] = REMOTE,
    cli_include: str | None = None,
    cli_exclude: str | None = None,
) -> dict[str, str]:
    return build_program_env(local, remote, cfg, cli_include=cli_include, cli_exclude=cli_exclude)


def env_cfg(section: object) -> EnvConfig:
    return parse_config({"feature": {"env": section}}).feature.env


def test_default_imports_everything_except_the_fixed_set() -> None:
    env = env_for(EnvConfig())
    assert env == {
        "PATH": "/usr/local/bin:/usr/bin",
        "HOME": "/home/dev",
        "EDITOR": "vim",
        "SHARED": "r",  # the target's value wins over the local one
        "DB_HOST": "db.internal",
        "DB_PASSWORD": "s3cret",
        "API_KEY": "k",
    }


def test_include_imports_only_matching_names() -> None:
    env = env_for(env_cfg({"include": "DB_*;API_?EY"}))
    assert env == {**LOCAL, "DB_HOST": "db.internal", "DB_PASSWORD": "s3cret", "API_KEY": "k"}


def test_exclude_wins_over_include() -> None:
    env = env_for(env_cfg({"include": ["DB_*"], "exclude": ["*PASSWORD"]}))
    assert env == {**LOCAL, "DB_HOST": "db.internal"}


def test_the_fixed_set_is_never_imported_even_when_included_by_name() -> None:
    env = env_for(env_cfg({"include": "PATH;HOME;PWD;PYTHONPATH;LD_PRELOAD;JAVA_HOME;BUNDLE_*"}))
    assert env == LOCAL


def test_override_is_applied_last_and_may_set_anything() -> None:
    env = env_for(env_cfg({"override": {"DB_HOST": "localhost", "PATH": "/x", "NEW": "1"}}))
    assert env["DB_HOST"] == "localhost"
    assert env["PATH"] == "/x"
    assert env["NEW"] == "1"


def test_cli_include_and_exclude_replace_the_files() -> None:
    cfg = env_cfg({"include": "DB_*", "exclude": "DB_PASSWORD"})
    env = env_for(cfg, cli_include="API_KEY;DB_PASSWORD")
    assert env == {**LOCAL, "API_KEY": "k"}  # the file's exclude still applies
    env = env_for(cfg, cli_exclude="DB_HOST")
    assert env == {**LOCAL, "DB_PASSWORD": "s3cret"}  # the file's include still applies


def test_disabled_env_imports_nothing_but_keeps_local_and_override() -> None:
    assert env_for(EnvConfig(enabled=False)) == LOCAL
    assert env_for(EnvConfig(enabled=False), cli_include="*") == LOCAL
    cfg = EnvConfig(enabled=False, override=MappingProxyType({"X": "1"}))
    assert env_for(cfg) == {**LOCAL, "X": "1"}


def test_unset_removes_local_variables_case_insensitively() -> None:
    local = {**LOCAL, "AWS_PROFILE": "personal", "aws_profile": "x"}
    env = env_for(env_cfg({"unset": ["Aws_Profile"]}), local=local, remote={})
    assert env == LOCAL
    # The target's own value is still imported: it is the one the program should see.
    env = env_for(env_cfg({"unset": "AWS_PROFILE"}), local=local, remote={"AWS_PROFILE": "prod"})
    assert env == {**LOCAL, "AWS_PROFILE": "prod"}


def test_empty_include_behaves_like_no_include() -> None:
    assert env_for(env_cfg({"include": []})) == env_for(EnvConfig())
    assert env_for(EnvConfig(), cli_include="") == env_for(EnvConfig())


def test_patterns_match_whole_names_and_case() -> None:
    remote = {"DB": "1", "DB_HOST": "2", "XDB": "3", "db": "4"}
    assert env_for(env_cfg({"include": "DB"}), local={}, remote=remote) == {"DB": "1"}
    assert env_for(env_cfg({"include": "DB*"}), local={}, remote=remote) == {
        "DB": "1",
        "DB_HOST": "2",
    }


def test_brackets_and_dots_are_literal() -> None:
    remote = {"A[1]": "1", "A1": "2", "A.B": "3", "AxB": "4"}
    env = env_for(env_cfg({"include": "A[1];A.B"}), local={}, remote=remote)
    assert env == {"A[1]": "1", "A.B": "3"}


def test_split_patterns() -> None:
    assert split_patterns("A; B_*;;C ") == ("A", "B_*", "C")
    assert split_patterns("") == ()
    with pytest.raises(EnvPatternError, match="'A=B'"):
        split_patterns("X;A=B")


def test_documented_fixed_set_includes_the_required_names() -> None:
    for name in ("PATH", "HOME", "PWD", "PYTHONPATH", "GOPATH", "GOROOT", "CLASSPATH",
                 "JAVA_HOME", "NODE_PATH", "LD_PRELOAD", "LD_LIBRARY_PATH"):  # fmt: skip
        assert name in NEVER_IMPORTED
        assert env_for(EnvConfig(), local={}, remote={name: "remote"}) == {}


# --- properties ------------------------------------------------------------------------------

NAME_CHARS = "ABXY_1.[]"
names = st.text(alphabet=NAME_CHARS, min_size=1, max_size=8)
# '[' has a meaning in fnmatch but not here, so the fnmatch oracle gets patterns without it.
oracle_patterns = st.text(alphabet="ABXY_1.*?", min_size=1, max_size=8)
values = st.text(alphabet="abc/:=", max_size=5)


def fixed(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in NEVER_IMPORTED)


@given(name=names.filter(lambda n: "[" not in n), pattern=oracle_patterns)
def test_a_single_include_pattern_selects_like_shell_wildcards(name: str, pattern: str) -> None:
    assume(not fixed(name))
    env = env_for(EnvConfig(include=(pattern,)), local={}, remote={name: "v"})
    assert (name in env) == fnmatch.fnmatchcase(name, pattern)


@given(
    local=st.dictionaries(names, values, max_size=6),
    remote=st.dictionaries(names, values, max_size=6),
    include=st.none() | st.lists(oracle_patterns, max_size=3).map(tuple),
    exclude=st.lists(oracle_patterns, max_size=3).map(tuple),
    override=st.dictionaries(names, values, max_size=3),
)
def test_every_variable_comes_from_exactly_the_right_place(
    local: dict[str, str],
    remote: dict[str, str],
    include: tuple[str, ...] | None,
    exclude: tuple[str, ...],
    override: dict[str, str],
) -> None:
    cfg = EnvConfig(include=include, exclude=exclude, override=MappingProxyType(override))
    env = env_for(cfg, local=local, remote=remote)

    def imported(name: str) -> bool:
        if name not in remote or fixed(name):
            return False
        if any(fnmatch.fnmatchcase(name, p) for p in exclude):
            return False
        return not include or any(fnmatch.fnmatchcase(name, p) for p in include)

    assert set(env) == set(local) | set(override) | {n for n in remote if imported(n)}
    for name, value in env.items():
        if name in override:
            assert value == override[name]
        elif imported(name):
            assert value == remote[name]
        else:
            assert value == local[name]


@given(
    patterns=st.lists(oracle_patterns, min_size=1, max_size=4),
    remote=st.dictionaries(names, values, max_size=6),
)
def test_a_semicolon_string_equals_the_list(patterns: list[str], remote: dict[str, str]) -> None:
    as_list = env_for(env_cfg({"include": patterns}), local={}, remote=remote)
    as_string = env_for(env_cfg({"include": ";".join(patterns)}), local={}, remote=remote)
    as_flag = env_for(EnvConfig(), local={}, remote=remote, cli_include=";".join(patterns))
    assert as_list == as_string == as_flag


@given(remote=st.dictionaries(st.sampled_from(NEVER_IMPORTED).map(lambda p: p.replace("*", "X")),
                              values, min_size=1))  # fmt: skip
def test_fixed_names_never_come_from_the_target(remote: dict[str, str]) -> None:
    assert env_for(EnvConfig(include=("*",)), local={}, remote=remote) == {}
