"""mirrord users switch without editing: configuration files in mirrord 3.250's vocabulary
verify (what does nothing here is named in a warning), operator features fail saying so."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mirrord_trace.config import ConfigError, load_config
from mirrord_trace.config.verify import verify_config

# Configuration files as mirrord users write them (mirrord 3.250's vocabulary and forms; the
# project's acceptance run over mirrord's own test files and docs examples is in the notes of
# issue #17): each verifies, with warnings that name what does nothing here ...
MIRRORD_STYLE = {
    "network shorthand": {"feature": {"network": True}},
    "target path as a mapping": {
        "target": {"path": {"pod": "web", "container": "app"}, "namespace": "shop"}
    },
    "path fields directly under target": {"target": {"deployment": "api", "container": "app"}},
    "rollout target": {"target": {"path": {"rollout": "checkout"}}},
    "agent image as registry and tag": {
        "agent": {"image": {"registry": "registry.example.com/team/agent", "tag": "1.2"}}
    },
    "RUST_LOG-style log level": {"agent": {"log_level": "mirrord=trace,agent=debug"}},
    "startup timeout over an hour": {"agent": {"startup_timeout": 7200}},
    "session filter with the key": {
        "key": "alice",
        "feature": {"network": {"incoming": {"mode": "steal", "http_filter": {
            "header_filter": "^baggage: .*mirrord-session={{ key }}.*$"}}}},
    },
    "all_of filter": {"feature": {"network": {"incoming": {"mode": "steal", "http_filter": {
        "all_of": [{"header": "^x-user: me$"}, {"path": "^/api/"}, {"method": "POST"}]}}}}},
    "env from a template": {"feature": {"env": {"override": {
        "GREETING": "{{ get_env(name='NO_SUCH_VARIABLE', default='hi') }}"}}}},
    "keys that mean nothing here": {
        "telemetry": True, "use_proxy": False, "experimental": {"tcp_ping4_mock": True},
        "internal_proxy": {"idle_timeout": 5},
    },
    "fs and env shorthands": {"feature": {"fs": "localwithoverrides", "env": True}},
    "outgoing and dns filters": {"feature": {"network": {
        "outgoing": {"filter": {"local": ["tcp://127.0.0.1/8", ":6379"]}},
        "dns": {"filter": {"local": ["localhost"]}}}}},
}  # fmt: skip
# ... and mirrord's operator features fail, saying so.
OPERATOR_ONLY = {
    "copy_target": {"feature": {"copy_target": True}},
    "split_queues": {"feature": {"split_queues": {"orders": {"queue_type": "SQS"}}}},
    "db_branches": {"feature": {"db_branches": [{"type": "mysql"}]}},
    "operator": {"operator": True},
}


def _verify(tmp_path: Path, config: dict) -> dict:
    path = tmp_path / "mirrord.json"
    path.write_text(json.dumps(config))
    return verify_config(path, environ={})


@pytest.mark.parametrize("name", sorted(MIRRORD_STYLE))
def test_mirrord_style_files_verify(tmp_path: Path, name: str) -> None:
    verdict = _verify(tmp_path, MIRRORD_STYLE[name])
    assert verdict["type"] == "Success", verdict
    assert all(isinstance(warning, str) for warning in verdict["warnings"])


def test_the_template_and_the_key_are_rendered(tmp_path: Path) -> None:
    templated = _verify(tmp_path, MIRRORD_STYLE["env from a template"])
    assert templated["type"] == "Success"
    cfg = load_config(tmp_path / "mirrord.json", environ={})
    assert cfg.feature.env.override["GREETING"] == "hi"


def test_keys_that_mean_nothing_here_are_named_in_warnings(tmp_path: Path) -> None:
    warnings = _verify(tmp_path, MIRRORD_STYLE["keys that mean nothing here"])["warnings"]
    named = " ".join(warnings)
    for key in ("telemetry", "use_proxy", "experimental", "internal_proxy"):
        assert key in named, warnings


@pytest.mark.parametrize("name", sorted(OPERATOR_ONLY))
def test_operator_features_fail_saying_so(tmp_path: Path, name: str) -> None:
    verdict = _verify(tmp_path, OPERATOR_ONLY[name])
    assert verdict["type"] == "Fail"
    (error,) = verdict["errors"]
    assert "needs mirrord's operator" in error, error


def test_verify_config_cli_prints_mirrords_json(tmp_path: Path) -> None:
    path = tmp_path / "mirrord.json"
    path.write_text(
        json.dumps(
            {
                "target": {"path": {"pod": "web", "container": "app"}, "namespace": "shop"},
                "feature": {"network": True},
                "telemetry": True,
                "experimental": {"tcp_ping4_mock": True},
            }
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "mirrord_trace", "verify-config", str(path)],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    verdict = json.loads(result.stdout)
    assert verdict["type"] == "Success"
    assert verdict["config"] == {
        "path": {"pod": "web", "container": "app"},
        "namespace": "shop",
    }
    telemetry, experimental = verdict["warnings"]
    assert telemetry.startswith("telemetry: ignored (") and "no telemetry" in telemetry
    assert experimental.startswith("experimental (tcp_ping4_mock): ignored (")


def test_verify_config_without_target_is_targetless_unless_ide(tmp_path: Path) -> None:
    path = tmp_path / "mirrord.json"
    path.write_text("{}")
    assert verify_config(path, environ={})["config"]["path"] == "targetless"
    assert verify_config(path, ide=True, environ={})["config"]["path"] is None


def test_verify_config_reports_a_typo_as_fail(tmp_path: Path) -> None:
    path = tmp_path / "mirrord.json"
    path.write_text('{"feature": {"netwrk": {}}}')
    verdict = verify_config(path, environ={})
    assert verdict["type"] == "Fail"
    assert "feature.netwrk: unknown key (did you mean network?" in verdict["errors"][0]


@pytest.mark.parametrize("text", ["[" * 5000, '{"a":' * 5000, '{"target": ' + "[" * 5000])
def test_deep_nesting_is_a_one_line_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "deep.json"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert "\n" not in str(caught.value)
    assert "nested too deeply" in str(caught.value) or "invalid JSON" in str(caught.value)


def test_deep_nesting_through_the_cli(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text("[" * 5000)
    result = subprocess.run(
        [sys.executable, "-m", "mirrord_trace", "exec", "-f", str(path), "--", "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "nested too deeply" in result.stderr


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "target",
                    "feature",
                    "agent",
                    "network",
                    "fs",
                    "env",
                    "incoming",
                    "mode",
                    "path",
                    "image",
                    "key",
                    "experimental",
                    "operator",
                    "labels",
                    "x",
                ]
            )
            | st.text(max_size=8),
            children,
            max_size=4,
        )
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(document=json_values, nesting=st.integers(0, 3000))
def test_the_loader_gives_a_config_or_a_one_line_error(
    tmp_path_factory: pytest.TempPathFactory, document: object, nesting: int
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "mirrord.json"
    text = json.dumps(document)
    if nesting:
        text = "[" * nesting + text + "]" * nesting
    path.write_text(text)
    try:
        load_config(path, environ={})
    except ConfigError as error:
        assert "\n" not in str(error) and str(error).startswith("config error: ")
