"""mirrord users switch without editing: every configuration file of mirrord's own tests and
every JSON example of mirrord's configuration docs (mirrord 3.250, collected as data in
tests/data/mirrord_configs/) verifies, or fails saying the feature needs mirrord's operator."""

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

DATA = Path(__file__).resolve().parent / "data" / "mirrord_configs"
TEST_CONFIGS = sorted((DATA / "tests").iterdir())
DOC_EXAMPLES = sorted((DATA / "docs").iterdir())


def test_the_collection_is_complete() -> None:
    # 14 layer-test and 5 e2e configuration files; 66 valid top-level JSON examples of the
    # docs plus the templated one (valid JSON only once rendered, as in mirrord).
    assert len(TEST_CONFIGS) == 19
    assert len(DOC_EXAMPLES) == 67


@pytest.mark.parametrize("path", TEST_CONFIGS + DOC_EXAMPLES, ids=lambda path: path.name)
def test_mirrords_configs_verify_or_need_the_operator(path: Path) -> None:
    verdict = verify_config(path, environ={})
    if verdict["type"] == "Fail":
        (error,) = verdict["errors"]
        assert "needs mirrord's operator" in error, error
    else:
        assert verdict["type"] == "Success"
        assert all(isinstance(warning, str) for warning in verdict["warnings"])


def test_acceptance_numbers() -> None:
    verdicts = [verify_config(path, environ={})["type"] for path in TEST_CONFIGS + DOC_EXAMPLES]
    # Only the operator-only features fail: copy_target, db_branches, preview, split_queues,
    # profile, operator: true.
    assert verdicts.count("Fail") == 13
    assert verdicts.count("Success") == len(verdicts) - 13


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
