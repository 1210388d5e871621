"""Every key of mirrord 3.250's schema is known here, with what mirrord-trace does with it; a
key that does nothing is accepted with a warning naming it, an operator feature fails saying
so, and a typo is still an error."""

from __future__ import annotations

from typing import Any

import pytest

from mirrord_trace.config import Config, ConfigError, parse_config
from mirrord_trace.config.keys import KEYS, Status


def test_the_table_covers_mirrords_sections_and_their_keys() -> None:
    # mirrord 3.250's schema names 230 dotted keys (with the target fields mirrord also takes
    # directly under `target`); each of its root sections is here with its own keys.
    assert len(KEYS) == 230
    roots = {key.split(".")[0] for key in KEYS}
    assert roots >= {"accept_invalid_certificates", "agent", "feature", "target", "kube_context",
                     "operator", "telemetry", "experimental", "internal_proxy", "key"}


def test_every_key_that_does_not_work_says_why() -> None:
    for key, entry in KEYS.items():
        if entry.status in (Status.IGNORED, Status.NOT_YET, Status.REJECTED):
            assert entry.why, key


def nested(key: str, value: Any) -> dict[str, Any]:
    for name in reversed(key.split(".")):
        value = {name: value}
    return value


@pytest.mark.parametrize(
    "key", sorted(key for key, entry in KEYS.items() if entry.status is Status.IGNORED)
)
def test_an_ignored_key_warns_naming_it_and_changes_nothing(key: str) -> None:
    cfg = parse_config(nested(key, "some value"))
    assert cfg == Config()
    (warning,) = cfg.warnings
    assert warning.startswith(f"{key.split('.')[0]}") and key.rsplit(".", 1)[-1] in warning
    assert "ignored (" in warning


def test_a_warning_names_the_keys_set_in_an_ignored_section() -> None:
    cfg = parse_config({"internal_proxy": {"idle_timeout": 5, "socket_timeout": 3}})
    assert cfg.warnings == (
        "internal_proxy (idle_timeout, socket_timeout): ignored (mirrord's local proxies; "
        "mirrord-trace's supervisor talks to the agent directly)",
    )


@pytest.mark.parametrize(
    ("document", "key"),
    [
        ({"feature": {"copy_target": True}}, "feature.copy_target"),
        ({"feature": {"copy_target": {"enabled": True}}}, "feature.copy_target"),
        ({"feature": {"split_queues": {"q": {"queue_type": "SQS"}}}}, "feature.split_queues"),
        ({"feature": {"db_branches": [{"type": "pg"}]}}, "feature.db_branches"),
        ({"feature": {"preview": {"image": "x"}}}, "feature.preview"),
        ({"operator": True}, "operator"),
        ({"profile": "team"}, "profile"),
        ({"target": {"path": {"job": "nightly"}}}, "target.path.job"),
        ({"target": {"stateful_set": "db"}}, "target.stateful_set"),
    ],
)
def test_operator_features_fail_saying_so(document: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(document)
    assert caught.value.key == key
    assert "needs mirrord's operator" in str(caught.value)


@pytest.mark.parametrize(
    "document",
    [
        {"feature": {"copy_target": False}},
        {"feature": {"copy_target": {"enabled": False, "scale_down": True}}},
        {"feature": {"split_queues": {}}},
        {"feature": {"db_branches": []}},
        {"operator": False},
        {"telemetry": False},
    ],
)
def test_the_off_value_of_a_feature_asks_for_nothing(document: dict[str, Any]) -> None:
    cfg = parse_config(document)
    assert cfg == Config() and cfg.warnings == ()


def test_http_filters_mirrord_trace_cannot_apply_are_refused_not_ignored() -> None:
    # Ignoring a filter would steal requests the user meant to leave to the cluster.
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {"feature": {"network": {"incoming": {"http_filter": {"header_filter_jq": ".a"}}}}}
        )
    assert caught.value.key == "feature.network.incoming.http_filter.header_filter_jq"
    assert "jq filters are not supported" in str(caught.value)


def test_a_typo_is_still_an_error() -> None:
    with pytest.raises(ConfigError, match=r"experimentl: unknown key \(did you mean"):
        parse_config({"experimentl": {}})


def test_mirrords_shorthands() -> None:
    off = parse_config({"feature": {"network": False}}).feature.network
    assert (off.incoming.mode.value, off.outgoing.tcp, off.outgoing.udp, off.dns.enabled) == (
        "off",
        False,
        False,
        False,
    )
    assert parse_config({"feature": {"network": True}}) == Config()
    target = parse_config({"target": {"pod": "web", "container": "app"}}).target
    assert str(target.path) == "pod/web/container/app"
    target = parse_config({"target": {"path": {"pod": "web", "container": "app"}}}).target
    assert str(target.path) == "pod/web/container/app"
    agent = parse_config({"agent": {"image": {"registry": "reg.local/agent", "tag": "7"}}}).agent
    assert agent.image == "reg.local/agent:7"
    assert parse_config({"agent": {"startup_timeout": 7200}}).agent.startup_timeout == 7200


def test_mirrords_own_agent_image_is_ignored_with_a_warning() -> None:
    cfg = parse_config({"agent": {"image": "ghcr.io/metalbear-co/mirrord:latest"}})
    assert cfg.agent.image is None
    (warning,) = cfg.warnings
    assert warning.startswith("agent.image: 'ghcr.io/metalbear-co/mirrord:latest' is mirrord's")
    assert "mirrord-trace agent-image push" in warning
    from mirrord_trace import __version__

    cfg = parse_config({"agent": {"image": {"registry": "reg.local/agent"}}})
    assert cfg.agent.image == f"reg.local/agent:{__version__}"
    with pytest.raises(ConfigError, match="no public agent image"):
        parse_config({"agent": {"image": {"tag": "3.250.0"}}})


def test_the_generated_tables_in_the_docs_are_up_to_date() -> None:
    from mirrord_trace.config.docs import DOC, updated

    text = DOC.read_text()
    assert updated(text) == text, "run: python -m mirrord_trace.config.docs"
    for key, entry in KEYS.items():
        assert f"| `{key}` | {entry.status.value} |" in text


def test_every_key_said_to_work_is_read_by_the_parser() -> None:
    from mirrord_trace.config.parse import SECTION_KEYS

    accepted = {
        f"{section}.{name}" if section else name
        for section, names in SECTION_KEYS.items()
        for name in names
    }
    for key, entry in KEYS.items():
        if entry.status is Status.WORKS:
            # Either a key of a section, or a field inside a value that one reads whole.
            parents = {key.rsplit(".", depth)[0] for depth in (0, 1, 2)}
            assert parents & accepted, key
