"""PathPolicy: mirrord's decision order, default lists and modes, and docs/fs.md agreeing.

The property test compares PathPolicy with a plain transcription of the documented order, on
random pattern lists and paths; the example tests pin the cases docs/fs.md spells out.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mirrord_trace.config.model import FsConfig, FsMode
from mirrord_trace.handlers.path_policy import (
    DEFAULT_REMOTE,
    LOCAL,
    NOT_FOUND,
    REMOTE,
    RULE_ORDER,
    PathPolicy,
    Whereabouts,
    default_local_patterns,
    default_not_found_patterns,
)
from tests.conftest import ROOT

WHERE = Whereabouts(
    home="/home/dev", cwd="/home/dev/project", program="/opt/tools/app", temp_dir="/tmp"
)


def policy(mode: FsMode = FsMode.READ, targetless: bool = False, **lists: list[str]) -> PathPolicy:
    compiled = {k: tuple(re.compile(p, re.IGNORECASE) for p in v) for k, v in lists.items()}
    return PathPolicy(FsConfig(mode=mode, **compiled), targetless=targetless, where=WHERE)


def test_docs_list_the_rules_in_the_codes_order() -> None:
    text = (ROOT / "docs" / "fs.md").read_text()
    block = text.split("<!-- decision-order")[1].split("<!-- end decision-order")[0]
    documented = re.findall(r"^\d+\. `([^`]+)`", block, re.MULTILINE)
    assert documented == [name for name, _, _ in RULE_ORDER] + ["fs mode"]


@pytest.mark.parametrize(
    ("mode", "path", "write", "expected"),
    [
        (FsMode.READ, "/app/config.yaml", False, REMOTE),
        (FsMode.READ, "/app/config.yaml", True, LOCAL),  # mirrord: writes stay local
        (FsMode.WRITE, "/app/config.yaml", True, REMOTE),
        (FsMode.LOCAL_WITH_OVERRIDES, "/app/config.yaml", False, LOCAL),
        (FsMode.LOCAL_WITH_OVERRIDES, "/etc/resolv.conf", False, REMOTE),
        (FsMode.READ, "/etc/hosts", False, REMOTE),
        (FsMode.WRITE, "/etc/hosts", True, LOCAL),  # default remote is read-only
        (FsMode.READ, "/etc/ssl/certs/ca.pem", False, REMOTE),
        (FsMode.READ, "/etc/passwd", False, LOCAL),
        (FsMode.WRITE, "/usr/lib/x86_64-linux-gnu/libc.so.6", False, LOCAL),
        (FsMode.READ, "/lib64/ld-linux-x86-64.so.2", False, LOCAL),
        (FsMode.READ, "/proc/self/maps", False, LOCAL),
        (FsMode.READ, "/tmp/scratch", False, LOCAL),
        (FsMode.READ, "/", False, LOCAL),
        (FsMode.READ, "/home/dev/project/main.go", False, LOCAL),  # the working directory
        (FsMode.READ, "/opt/tools/app", False, LOCAL),  # the program itself
        (FsMode.READ, "/home/dev/.bashrc", False, LOCAL),  # hidden files at home
        (FsMode.READ, "/home/dev/.kube/config", False, NOT_FOUND),
        (FsMode.WRITE, "/home/dev/.config/gcloud/credentials.db", True, NOT_FOUND),
        (FsMode.READ, "/HOME/DEV/.AZURE/x", False, NOT_FOUND),  # case-insensitive
        (FsMode.READ, "/var/lib/app/state", False, REMOTE),
        (FsMode.READ, "/srv/app.py", False, LOCAL),
    ],
)
def test_documented_examples(mode: FsMode, path: str, write: bool, expected: str) -> None:
    assert policy(mode).decide(path, write)[0] == expected


def test_user_rules_come_before_the_defaults() -> None:
    rules = policy(
        FsMode.READ,
        read_only=[r"^/etc/app\.conf$", r"^/home/dev/\.kube/"],
        local=[r"^/app/local"],
        read_write=[r"^/app/uploads/"],
        not_found=[r"^/app/uploads/secret"],
    )
    assert rules.decide("/etc/app.conf", False) == (REMOTE, "user read_only")
    assert rules.decide("/home/dev/.kube/config", False)[0] == REMOTE
    assert rules.decide("/app/local.txt", False)[0] == LOCAL
    assert rules.decide("/app/uploads/a", True) == (REMOTE, "user read_write")
    assert rules.decide("/app/uploads/secret.key", False)[0] == NOT_FOUND
    assert rules.decide("/etc/app.conf", True)[0] == LOCAL  # read_only: writes stay local


def test_targetless_turns_remote_into_local_but_keeps_not_found() -> None:
    rules = policy(FsMode.WRITE, targetless=True, not_found=["^/secret"])
    assert rules.decide("/app/config.yaml", True)[0] == LOCAL
    assert rules.decide("/etc/hosts", False)[0] == LOCAL
    assert rules.decide("/secret/x", False)[0] == NOT_FOUND
    assert rules.decide("/home/dev/.kube/config", False)[0] == NOT_FOUND
    assert not rules.can_write_remotely


def test_remote_writes_are_possible_only_in_write_mode_or_with_read_write_paths() -> None:
    assert policy(FsMode.WRITE).can_write_remotely
    assert not policy(FsMode.READ).can_write_remotely
    assert policy(FsMode.READ, read_write=["^/data/"]).can_write_remotely


def test_explained_rules_name_the_pattern() -> None:
    rules = PathPolicy(FsConfig(), where=WHERE, explain=True)
    assert rules.decide("/usr/bin/env", False) == (LOCAL, "default local pattern ^/usr(/|$)")
    assert rules.decide("/etc/hosts", True) == (
        LOCAL, r"default remote pattern ^/etc/hosts$, writes stay local"
    )


def test_user_patterns_with_inline_flags_still_work() -> None:
    # Python refuses global flags in the middle of a combined regex: matched one by one then.
    rules = policy(FsMode.READ, local=["(?s)^/app/keep", "^/app/also"])
    assert rules.decide("/app/keep/x", False)[0] == LOCAL
    assert rules.decide("/app/also", False)[0] == LOCAL
    assert rules.decide("/app/other", False)[0] == REMOTE


# ---- the documented order, transcribed plainly, against random configurations ----

_SEGMENTS = [
    "app", "etc", "home", "dev", ".kube", "data", "tmp", "usr", "hosts", "A", "x.so", "libc.so.6",
    ".so", "so", "m.py", "package.json", "node_modules", ".asdf", "clr-1-pipe-2", "jvm.cfg",
    "venv.cfg", ".tool-versions",
]  # fmt: skip
paths = st.lists(st.sampled_from(_SEGMENTS), min_size=0, max_size=4).map(
    lambda parts: "/" + "/".join(parts)
)
patterns = st.lists(
    st.sampled_from(_SEGMENTS).map(lambda s: re.escape(s)).flatmap(
        lambda s: st.sampled_from([f"^/{s}", f"/{s}$", s, f"^/{s}(/|$)"])
    ),
    max_size=3,
)


def reference(fs: FsConfig, path: str, write: bool, targetless: bool) -> str:
    def any_match(sources: list[str]) -> bool:
        return any(re.search(source, path, re.IGNORECASE) for source in sources)

    user = [
        ([p.pattern for p in fs.not_found], NOT_FOUND, NOT_FOUND),
        ([p.pattern for p in fs.read_write], REMOTE, REMOTE),
        ([p.pattern for p in fs.read_only], REMOTE, LOCAL),
        ([p.pattern for p in fs.local], LOCAL, LOCAL),
        (default_not_found_patterns(WHERE), NOT_FOUND, NOT_FOUND),
        (list(DEFAULT_REMOTE), REMOTE, LOCAL),
        (default_local_patterns(WHERE), LOCAL, LOCAL),
    ]
    for sources, read_verdict, write_verdict in user:
        if any_match(sources):
            verdict = write_verdict if write else read_verdict
            break
    else:
        verdict = {
            FsMode.READ: LOCAL if write else REMOTE,
            FsMode.WRITE: REMOTE,
            FsMode.LOCAL_WITH_OVERRIDES: LOCAL,
        }[fs.mode]
    return LOCAL if targetless and verdict == REMOTE else verdict


@given(
    mode=st.sampled_from([FsMode.READ, FsMode.WRITE, FsMode.LOCAL_WITH_OVERRIDES]),
    lists=st.fixed_dictionaries(
        {"not_found": patterns, "read_write": patterns, "read_only": patterns, "local": patterns}
    ),
    checks=st.lists(st.tuples(paths, st.booleans()), min_size=1, max_size=8),
    targetless=st.booleans(),
)
def test_policy_follows_the_documented_order(
    mode: FsMode, lists: dict[str, list[str]], checks: list[tuple[str, bool]], targetless: bool
) -> None:
    rules = policy(mode, targetless, **lists)
    fs = FsConfig(
        mode=mode, **{k: tuple(re.compile(p, re.IGNORECASE) for p in v) for k, v in lists.items()}
    )
    for path, write in checks * 2:  # twice: the decision cache must answer the same
        assert rules.decide(path, write)[0] == reference(fs, path, write, targetless), (path, write)


def test_docs_mention_every_default_remote_path() -> None:
    text = (Path(ROOT) / "docs" / "fs.md").read_text()
    for pattern in DEFAULT_REMOTE:
        plain = re.sub(r"\(/\|\$\)$", "", pattern).strip("^$").replace("\\", "")
        assert plain in text, plain


def test_the_working_tree_top_is_the_nearest_marked_directory(tmp_path) -> None:
    from mirrord_trace.handlers.path_policy import working_tree_top

    (tmp_path / "repo" / ".git").mkdir(parents=True)
    deep = tmp_path / "repo" / "services" / "api"
    deep.mkdir(parents=True)
    assert working_tree_top(str(deep)) == str(tmp_path / "repo")
    assert working_tree_top(str(tmp_path)) in ("", *(str(p) for p in tmp_path.parents))


def test_toolchain_directories_and_the_programs_prefix_are_local(tmp_path) -> None:
    from mirrord_trace.handlers.path_policy import toolchain_directories

    environ = {"GOPATH": "/srv/go:relative", "VIRTUAL_ENV": "/srv/env/", "HOME": "/root"}
    found = toolchain_directories(environ, "/srv/env/bin/python")
    assert found == ("/srv/go", "/srv/env")  # the prefix of bin/python is the venv again
    assert "/" not in toolchain_directories({}, "/bin/sh")  # never everything
    where = Whereabouts(home="/root", cwd="/srv/repo/app", program="/srv/env/bin/python",
                        temp_dir="/tmp", tree="/srv/repo", toolchain=found)
    decide = PathPolicy(FsConfig(mode=FsMode.READ), where=where).decide
    assert decide("/srv/repo/lib/go.mod")[0] == LOCAL
    assert decide("/srv/go/pkg/mod/x@v1/x.go")[0] == LOCAL
    assert decide("/root/go/pkg/mod/cache")[0] == LOCAL
    assert decide("/root/.kube/config")[0] == NOT_FOUND
    assert decide("/srv/app/config.yaml")[0] == REMOTE
