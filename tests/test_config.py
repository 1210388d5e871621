"""Configuration: mirrord's keys, shorthands and defaults; strict validation with one-line
errors that name the dotted key; the three file formats; command-line flags winning."""

from __future__ import annotations

import ipaddress
import json
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mirrord_trace.config import (
    AddressFilter,
    CliOverrides,
    Config,
    ConfigError,
    ConfigFileError,
    FilterSide,
    FsMode,
    IncomingMode,
    Protocol,
    load_config,
    parse_config,
)
from mirrord_trace.targets import (
    DeploymentTarget,
    PidTarget,
    PodTarget,
    RolloutTarget,
    Targetless,
)


@pytest.fixture
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="mirrord-trace-config-") as path:
        yield Path(path)


def parse_error(document: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_config(document)
    return caught.value


# --- defaults and shorthands -------------------------------------------------------------


def test_an_empty_configuration_has_mirrords_defaults() -> None:
    cfg = parse_config({})
    assert cfg == Config()
    assert cfg.target.resolved == Targetless()
    assert cfg.feature.fs.mode is FsMode.READ
    assert cfg.feature.env.enabled and cfg.feature.env.include is None
    network = cfg.feature.network
    assert network.incoming.mode is IncomingMode.MIRROR
    # mirrord 3.250: no filter, and a filter would apply on every stolen port
    assert network.incoming.http_filter.wire is None
    assert network.incoming.http_filter.ports is None
    assert network.outgoing.tcp and network.outgoing.udp and network.outgoing.filter is None
    assert network.dns.enabled and network.dns.filter is None
    assert (cfg.agent.ttl, cfg.agent.startup_timeout) == (1, 60)
    assert not cfg.agent.ephemeral and not cfg.agent.privileged


@pytest.mark.parametrize(
    ("value", "mode"),
    [
        ("local", FsMode.LOCAL),
        ("localwithoverrides", FsMode.LOCAL_WITH_OVERRIDES),
        ("read", FsMode.READ),
        ("write", FsMode.WRITE),
        (True, FsMode.READ),
        (False, FsMode.LOCAL),
        ({"mode": "write"}, FsMode.WRITE),
    ],
)
def test_fs_shorthands(value: object, mode: FsMode) -> None:
    assert parse_config({"feature": {"fs": value}}).feature.fs.mode is mode


@pytest.mark.parametrize(
    ("value", "mode"),
    [
        ("mirror", IncomingMode.MIRROR),
        ("steal", IncomingMode.STEAL),
        ("off", IncomingMode.OFF),
        (True, IncomingMode.MIRROR),
        (False, IncomingMode.OFF),
        ({"mode": "steal"}, IncomingMode.STEAL),
    ],
)
def test_incoming_shorthands(value: object, mode: IncomingMode) -> None:
    cfg = parse_config({"feature": {"network": {"incoming": value}}})
    assert cfg.feature.network.incoming.mode is mode


def test_boolean_shorthands_switch_features_off() -> None:
    cfg = parse_config({"feature": {"env": False, "network": {"outgoing": False, "dns": False}}})
    assert not cfg.feature.env.enabled
    assert not cfg.feature.network.outgoing.tcp and not cfg.feature.network.outgoing.udp
    assert not cfg.feature.network.dns.enabled


def test_null_means_default() -> None:
    cfg = parse_config({"feature": {"fs": None, "network": {"outgoing": {"tcp": None}}}})
    assert cfg == Config()


@pytest.mark.parametrize(
    ("value", "target", "namespace"),
    [
        ("targetless", Targetless(), None),
        ("pid/4242", PidTarget(4242), None),
        ("pod/web-7f9c", PodTarget("web-7f9c"), None),
        ("pod/web/container/app", PodTarget("web", "app"), None),
        ("deployment/api", DeploymentTarget("api"), None),
        ("deploy/api/container/side-car", DeploymentTarget("api", "side-car"), None),
        ({"path": "pod/web", "namespace": "shop"}, PodTarget("web"), "shop"),
        ({"path": {"pod": "web", "container": "app"}}, PodTarget("web", "app"), None),
        ({"path": {"deployment": "api"}, "namespace": "a-b"}, DeploymentTarget("api"), "a-b"),
        ("rollout/canary", RolloutTarget("canary"), None),
        ({"path": {"rollout": "canary", "container": "app"}}, RolloutTarget("canary", "app"), None),
        ({"rollout": "canary"}, RolloutTarget("canary"), None),
        ({"namespace": "shop"}, Targetless(), "shop"),
    ],
)
def test_target_forms(value: object, target: object, namespace: str | None) -> None:
    cfg = parse_config({"target": value})
    assert cfg.target.resolved == target
    assert cfg.target.namespace == namespace


def test_env_section() -> None:
    cfg = parse_config(
        {
            "feature": {
                "env": {
                    "include": "DB_*;API_KEY; ",
                    "exclude": ["DB_PASSWORD"],
                    "override": {"REGION": "eu-2"},
                    "unset": "AWS_PROFILE",
                }
            }
        }
    )
    env = cfg.feature.env
    assert env.include == ("DB_*", "API_KEY")
    assert env.exclude == ("DB_PASSWORD",)
    assert dict(env.override) == {"REGION": "eu-2"}
    assert env.unset == ("AWS_PROFILE",)


def test_fs_pattern_lists_compile_case_insensitively() -> None:
    fs = parse_config(
        {
            "feature": {
                "fs": {
                    "mode": "write",
                    "read_write": r".+\.json",
                    "read_only": [r".+\.yaml", "^/etc/"],
                    "local": [],
                    "not_found": [r"\.config/gcloud"],
                }
            }
        }
    ).feature.fs
    assert [p.pattern for p in fs.read_only] == [r".+\.yaml", "^/etc/"]
    assert fs.read_write[0].fullmatch("/app/CONFIG.JSON")
    assert fs.local == ()
    assert fs.not_found[0].search("/root/.config/gcloud/creds")


def test_incoming_section() -> None:
    incoming = parse_config(
        {
            "feature": {
                "network": {
                    "incoming": {
                        "mode": "steal",
                        "http_filter": {"header_filter": "host: api\\..+", "ports": 8080},
                        "port_mapping": [[7777, 80]],
                        "listen_ports": [[80, 4480]],
                        "ignore_localhost": True,
                        "ignore_ports": [9999, 10000],
                    }
                }
            }
        }
    ).feature.network.incoming
    assert incoming.mode is IncomingMode.STEAL
    assert incoming.http_filter.wire == {"header": "host: api\\..+"}
    assert incoming.http_filter.ports == (8080,)
    assert incoming.port_mapping == ((7777, 80),)
    assert incoming.listen_ports == ((80, 4480),)
    assert incoming.ignore_localhost
    assert incoming.ignore_ports == {9999, 10000}
    assert incoming.ports is None


def test_outgoing_filter_entries_are_typed() -> None:
    outgoing = parse_config(
        {
            "feature": {
                "network": {
                    "outgoing": {
                        "udp": False,
                        "filter": {
                            "remote": [
                                "tcp://10.0.0.0/8:5432",
                                "db.internal",
                                ":53",
                                "1.2.3.4",
                                "[::1]:80",
                                "udp://cache.svc:6379",
                            ]
                        },
                    }
                }
            }
        }
    ).feature.network.outgoing
    assert outgoing.tcp and not outgoing.udp
    assert outgoing.filter is not None and outgoing.filter.side is FilterSide.REMOTE
    assert outgoing.filter.entries == (
        AddressFilter(Protocol.TCP, ipaddress.ip_network("10.0.0.0/8"), 5432),
        AddressFilter(Protocol.ANY, "db.internal", None),
        AddressFilter(Protocol.ANY, None, 53),
        AddressFilter(Protocol.ANY, ipaddress.ip_address("1.2.3.4"), None),
        AddressFilter(Protocol.ANY, ipaddress.ip_address("::1"), 80),
        AddressFilter(Protocol.UDP, "cache.svc", 6379),
    )


def test_dns_filter() -> None:
    dns = parse_config(
        {"feature": {"network": {"dns": {"filter": {"local": "localhost:1337"}}}}}
    ).feature.network.dns
    assert dns.enabled
    assert dns.filter is not None and dns.filter.side is FilterSide.LOCAL
    assert dns.filter.entries == (AddressFilter(Protocol.ANY, "localhost", 1337),)


def test_agent_section() -> None:
    agent = parse_config(
        {
            "agent": {
                "image": "registry.local/agent:1",
                "namespace": "mirrord",
                "ttl": 30,
                "ephemeral": True,
                "privileged": True,
                "startup_timeout": 360,
                "communication_timeout": 30,
                "image_pull_policy": "Always",
                "network_interface": "eth0",
            }
        }
    ).agent
    assert (agent.image, agent.namespace, agent.ttl) == ("registry.local/agent:1", "mirrord", 30)
    assert agent.ephemeral and agent.privileged
    assert agent.startup_timeout == 360
    assert (agent.communication_timeout, agent.image_pull_policy) == (30, "Always")


# --- validation errors: one line, the dotted key, the bad value, what is allowed ---------

ERROR_CASES: list[tuple[dict[str, Any], str, list[str]]] = [
    (
        {"feature": {"fs": {"mode": "reed"}}},
        "feature.fs.mode",
        ["'reed' is not one of local, localwithoverrides, read, write"],
    ),
    ({"feature": {"fs": "reed"}}, "feature.fs", ["'reed'", "localwithoverrides"]),
    ({"featur": {}}, "featur", ["did you mean feature?", "kube_context"]),
    ({"feature": {"fs": {"moed": "read"}}}, "feature.fs.moed", ["did you mean mode?"]),
    (
        {"feature": {"network": {"outgoing": {"filter": {"remote": [], "loca": []}}}}},
        "feature.network.outgoing.filter.loca",
        ["local, remote"],
    ),
    ({"agent": {"ttl": -1}}, "agent.ttl", ["-1", "0 to 65535"]),
    ({"agent": {"ttl": 65536}}, "agent.ttl", ["65536", "0 to 65535"]),
    ({"agent": {"ttl": True}}, "agent.ttl", ["true", "0 to 65535"]),
    ({"agent": {"ttl": "30"}}, "agent.ttl", ["'30'", "integer"]),
    ({"agent": {"startup_timeout": 0}}, "agent.startup_timeout", ["0", "1 to 4294967295"]),
    ({"agent": {"ephemeral": "yes"}}, "agent.ephemeral", ["'yes'", "true, false"]),
    ({"agent": {"namespace": "Has_Caps"}}, "agent.namespace", ["'Has_Caps'", "lowercase"]),
    ({"agent": {"image": ""}}, "agent.image", ["empty"]),
    ({"agent": {"image_pull_policy": "Sometimes"}}, "agent.image_pull_policy", ["Never"]),
    ({"target": "foo/bar"}, "target", ["'foo/bar'", "pod/NAME"]),
    ({"target": "statefulset/web"}, "target", ["not supported", "rollout/NAME"]),
    ({"target": "pid/0"}, "target", ["positive"]),
    ({"target": "pod/Web"}, "target", ["'Web'"]),
    ({"target": {"path": "pod/a/b"}}, "target.path", ["pod/NAME/container/C"]),
    ({"target": {"namespace": 3}}, "target.namespace", ["3", "not a string"]),
    ({"target": {"pth": "pod/a"}}, "target.pth", ["did you mean path?"]),
    ({"kubeconfig": ["a"]}, "kubeconfig", ["['a']", "not a string"]),
    ({"feature": []}, "feature", ["[]", "mapping"]),
    ({"feature": {"env": "yes"}}, "feature.env", ["'yes'", "true, false or a mapping"]),
    (
        {"feature": {"network": {"dns": "off"}}},
        "feature.network.dns",
        ["'off'", "true, false or a mapping"],
    ),
    ({"feature": {"env": {"include": 5}}}, "feature.env.include", ["5", "list of strings"]),
    ({"feature": {"env": {"include": ["A", 1]}}}, "feature.env.include", ["1"]),
    ({"feature": {"env": {"exclude": "A=B"}}}, "feature.env.exclude", ["'A=B'", "no '='"]),
    ({"feature": {"env": {"override": {"A": 1}}}}, "feature.env.override.A", ["1"]),
    ({"feature": {"env": {"load": True}}}, "feature.env.load", ["exclude, include, mapping"]),
    (
        {"feature": {"fs": {"read_only": ["ok", "(unclosed"]}}},
        "feature.fs.read_only",
        ["'(unclosed'", "regular expression"],
    ),
    (
        {"feature": {"fs": {"not_found": "*.txt"}}},
        "feature.fs.not_found",
        ["'*.txt'", "regular expression"],
    ),
    (
        {"feature": {"network": {"incoming": "stael"}}},
        "feature.network.incoming",
        ["'stael'", "mirror, steal, off"],
    ),
    (
        {"feature": {"network": {"incoming": {"http_filter": {"path_filter": "[a-"}}}}},
        "feature.network.incoming.http_filter.path_filter",
        ["'[a-'", "regular expression"],
    ),
    (
        {"feature": {"network": {"incoming": {"port_mapping": [[80]]}}}},
        "feature.network.incoming.port_mapping",
        ["[80]", "pair"],
    ),
    (
        {"feature": {"network": {"incoming": {"ignore_ports": [0]}}}},
        "feature.network.incoming.ignore_ports",
        ["0", "1 to 65535"],
    ),
    (
        {"feature": {"network": {"incoming": {"ports": [80], "ignore_ports": [81]}}}},
        "feature.network.incoming.ports",
        ["ignore_ports"],
    ),
    (
        {"feature": {"network": {"outgoing": {"tcp": "false"}}}},
        "feature.network.outgoing.tcp",
        ["'false'", "true, false"],
    ),
    (
        {"feature": {"network": {"outgoing": {"filter": {"remote": [], "local": []}}}}},
        "feature.network.outgoing.filter",
        ["exactly one of remote, local"],
    ),
    (
        {"feature": {"network": {"outgoing": {"filter": {}}}}},
        "feature.network.outgoing.filter",
        ["exactly one of remote, local"],
    ),
    (
        {"feature": {"network": {"outgoing": {"filter": {"remote": ["tcp://db/8:5432"]}}}}},
        "feature.network.outgoing.filter.remote",
        ["'tcp://db/8:5432'", "subnet needs an IP address", "[:PORT]"],
    ),
    (
        {"feature": {"network": {"outgoing": {"filter": {"local": ["sctp://1.2.3.4"]}}}}},
        "feature.network.outgoing.filter.local",
        ["'sctp://1.2.3.4'", "tcp, udp, any"],
    ),
    (
        {"feature": {"network": {"dns": {"filter": {"remote": ["udp://x"]}}}}},
        "feature.network.dns.filter.remote",
        ["'udp://x'", "no protocol"],
    ),
    (
        {"feature": {"network": {"dns": {"enabled": 1}}}},
        "feature.network.dns.enabled",
        ["1", "true, false"],
    ),
]


@pytest.mark.parametrize(("document", "key", "fragments"), ERROR_CASES)
def test_each_error_names_the_key_the_value_and_what_is_allowed(
    document: dict[str, Any], key: str, fragments: list[str]
) -> None:
    error = parse_error(document)
    message = str(error)
    assert error.key == key
    assert message.startswith(f"config error: {key}: "), message
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    assert key in error.hint


# --- filter grammar ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tcp://", AddressFilter(Protocol.TCP, None, None)),
        ("UDP://:53", AddressFilter(Protocol.UDP, None, 53)),
        ("any://host.example.", AddressFilter(Protocol.ANY, "host.example", None)),
        ("Redis.Cache:0", AddressFilter(Protocol.ANY, "redis.cache", None)),
        ("0.0.0.0:8080", AddressFilter(Protocol.ANY, ipaddress.ip_network("0.0.0.0/0"), 8080)),
        ("[::]:80", AddressFilter(Protocol.ANY, ipaddress.ip_network("::/0"), 80)),
        ("[fd00::]/8:443", AddressFilter(Protocol.ANY, ipaddress.ip_network("fd00::/8"), 443)),
        ("10.1.2.3/8", AddressFilter(Protocol.ANY, ipaddress.ip_network("10.0.0.0/8"), None)),
        ("my_srv-1.ns.svc", AddressFilter(Protocol.ANY, "my_srv-1.ns.svc", None)),
    ],
)
def test_filter_entry_forms(text: str, expected: AddressFilter) -> None:
    cfg = parse_config({"feature": {"network": {"outgoing": {"filter": {"local": text}}}}})
    assert cfg.feature.network.outgoing.filter is not None
    assert cfg.feature.network.outgoing.filter.entries == (expected,)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("::1", "brackets"),
        ("[::1", "']'"),
        ("[1.2.3.4]:80", "not an IPv6"),
        ("[::1]x", "after ']'"),
        ("1.2.3.4:99999", "port"),
        ("1.2.3.4:", "port"),
        ("1.2.3.4/33", "prefix length"),
        ("/8:80", "subnet needs an IP"),
        ("bad host", "neither"),
        ("1.2.3.256", "IPv4"),
        ("-lead.example", "neither"),
    ],
)
def test_bad_filter_entries(text: str, reason: str) -> None:
    error = parse_error({"feature": {"network": {"outgoing": {"filter": {"remote": [text]}}}}})
    assert reason in str(error), str(error)


def test_filter_matching() -> None:
    subnet = AddressFilter(Protocol.TCP, ipaddress.ip_network("10.0.0.0/8"), 5432)
    assert subnet.matches(Protocol.TCP, ipaddress.ip_address("10.9.8.7"), 5432)
    assert not subnet.matches(Protocol.UDP, ipaddress.ip_address("10.9.8.7"), 5432)
    assert not subnet.matches(Protocol.TCP, ipaddress.ip_address("11.0.0.1"), 5432)
    assert not subnet.matches(Protocol.TCP, ipaddress.ip_address("10.0.0.1"), 5433)
    assert not subnet.matches(Protocol.TCP, ipaddress.ip_address("::ffff:10.0.0.1"), 5432)
    port_only = AddressFilter(Protocol.ANY, None, 53)
    assert port_only.matches(Protocol.UDP, ipaddress.ip_address("8.8.8.8"), 53)
    assert port_only.matches(Protocol.TCP, None, 53, "anything")
    name = AddressFilter(Protocol.ANY, "db.internal", None)
    assert name.matches(Protocol.TCP, ipaddress.ip_address("10.0.0.5"), 5432, "DB.internal.")
    assert not name.matches(Protocol.TCP, ipaddress.ip_address("10.0.0.5"), 5432, None)
    assert not name.matches(Protocol.TCP, None, 5432, "other.internal")


# --- files ---------------------------------------------------------------------------------

JSON_DOC = {
    "target": {"path": "pid/77", "namespace": "shop"},
    "kube_context": "kind-dev",
    "feature": {
        "env": {"include": "APP_*", "override": {"MODE": "dev"}},
        "fs": {"mode": "write", "read_only": ["^/etc/"]},
        "network": {
            "incoming": {"mode": "steal", "ports": [8080]},
            "outgoing": {"udp": False, "filter": {"local": [":53", "tcp://[::1]:80"]}},
            "dns": {"enabled": True, "filter": {"remote": ["svc.cluster.local"]}},
        },
    },
    "agent": {"ttl": 5, "ephemeral": True},
}

YAML_DOC = """\
target:
  path: pid/77
  namespace: shop
kube_context: kind-dev
feature:
  env:
    include: APP_*
    override: {MODE: dev}
  fs:
    mode: write
    read_only: ["^/etc/"]
  network:
    incoming: {mode: steal, ports: [8080]}
    outgoing:
      udp: false
      filter:
        local: [":53", "tcp://[::1]:80"]
    dns:
      enabled: true
      filter: {remote: [svc.cluster.local]}
agent: {ttl: 5, ephemeral: true}
"""

TOML_DOC = """\
kube_context = "kind-dev"

[target]
path = "pid/77"
namespace = "shop"

[feature.env]
include = "APP_*"
override = { MODE = "dev" }

[feature.fs]
mode = "write"
read_only = ["^/etc/"]

[feature.network.incoming]
mode = "steal"
ports = [8080]

[feature.network.outgoing]
udp = false
filter = { local = [":53", "tcp://[::1]:80"] }

[feature.network.dns]
enabled = true
filter = { remote = ["svc.cluster.local"] }

[agent]
ttl = 5
ephemeral = true
"""


def test_the_three_formats_give_the_same_configuration(workdir: Path) -> None:
    (workdir / "c.json").write_text(json.dumps(JSON_DOC))
    (workdir / "c.yaml").write_text(YAML_DOC)
    (workdir / "c.toml").write_text(TOML_DOC)
    from_json = load_config(workdir / "c.json")
    assert load_config(workdir / "c.yaml") == from_json
    assert load_config(workdir / "c.toml") == from_json
    assert from_json.target.resolved == PidTarget(77)
    assert from_json.feature.fs.mode is FsMode.WRITE
    assert from_json.feature.network.incoming.ports == {8080}
    assert from_json.agent.ttl == 5


def test_yml_extension_empty_yaml_and_extensionless_json(workdir: Path) -> None:
    (workdir / "c.yml").write_text("feature: {fs: local}\n")
    (workdir / "empty.yaml").write_text("")
    (workdir / "heredoc").write_text('{"feature": {"fs": "local"}}')
    assert load_config(workdir / "c.yml").feature.fs.mode is FsMode.LOCAL
    assert load_config(workdir / "empty.yaml") == Config()
    assert load_config(workdir / "heredoc").feature.fs.mode is FsMode.LOCAL


@pytest.mark.parametrize(
    ("name", "content", "fragments"),
    [
        ("bad.json", '{"feature": {"fs": }', ["invalid JSON at line 1, column 20"]),
        ("bad.yaml", "feature:\n  fs: [read\n", ["invalid YAML at line", "column"]),
        ("bad.toml", "[feature\nfs = 1\n", ["invalid TOML", "line 1"]),
        ("list.json", "[1, 2]", ["top level is a list", "not a mapping"]),
        ("scalar.yaml", "just text\n", ["top level is a str"]),
        ("config.ini", "[feature]\n", ["unknown file type '.ini'"]),
        ("latin1.json", b'{"a": "\xe9"}', ["not UTF-8"]),
    ],
)
def test_unreadable_files_give_one_line(
    workdir: Path, name: str, content: str | bytes, fragments: list[str]
) -> None:
    path = workdir / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(ConfigFileError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"config error: {path}: ")
    assert "\n" not in message and "\n" not in caught.value.hint
    for fragment in fragments:
        assert fragment in message, message


def test_missing_and_directory_paths(workdir: Path) -> None:
    with pytest.raises(ConfigFileError, match="no such file"):
        load_config(workdir / "absent.json")
    (workdir / "dir.json").mkdir()
    with pytest.raises(ConfigFileError, match="is a directory"):
        load_config(workdir / "dir.json")


def test_a_value_error_from_a_file_names_the_file_in_the_hint(workdir: Path) -> None:
    path = workdir / "c.yaml"
    path.write_text("agent:\n  ttl: lots\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == "config error: agent.ttl: 'lots' is not an integer from 0 to 65535"
    assert caught.value.hint == f"fix agent.ttl in {path}"


def test_yaml_keys_that_are_not_strings_are_rejected(workdir: Path) -> None:
    path = workdir / "c.yaml"
    path.write_text("feature:\n  on: true\n")  # YAML 1.1 reads `on` as a boolean key
    with pytest.raises(ConfigError, match=re.escape("feature: key true is not a string")):
        load_config(path)


# --- command-line flags win -----------------------------------------------------------------


def test_flags_override_file_values_and_leave_the_rest(workdir: Path) -> None:
    path = workdir / "c.json"
    path.write_text(json.dumps(JSON_DOC))
    from_file = load_config(path)
    merged = load_config(
        path,
        CliOverrides(
            target=PodTarget("web"),
            target_namespace="other",
            kube_context="prod",
            fs_mode=FsMode.READ,
            no_tcp_outgoing=True,
            no_remote_dns=True,
            ephemeral_container=True,
            agent_ttl=0,
        ),
    )
    assert merged.target.resolved == PodTarget("web") and merged.target.namespace == "other"
    assert merged.kube_context == "prod"
    assert merged.feature.fs.mode is FsMode.READ
    assert merged.feature.fs.read_only == from_file.feature.fs.read_only
    outgoing = merged.feature.network.outgoing
    assert not outgoing.tcp and not outgoing.udp
    assert outgoing.filter == from_file.feature.network.outgoing.filter
    assert not merged.feature.network.dns.enabled
    assert merged.feature.network.dns.filter == from_file.feature.network.dns.filter
    assert merged.agent.ttl == 0 and merged.agent.ephemeral
    assert merged.feature.env == from_file.feature.env
    assert merged.feature.network.incoming == from_file.feature.network.incoming


def test_no_flags_change_nothing(workdir: Path) -> None:
    path = workdir / "c.json"
    path.write_text(json.dumps(JSON_DOC))
    assert load_config(path, CliOverrides()) == load_config(path)


def test_steal_and_no_outgoing_flags_on_defaults() -> None:
    cfg = load_config(None, CliOverrides(steal=True, no_outgoing=True))
    assert cfg.feature.network.incoming.mode is IncomingMode.STEAL
    assert not cfg.feature.network.outgoing.tcp and not cfg.feature.network.outgoing.udp
    only_udp_off = load_config(None, CliOverrides(no_udp_outgoing=True))
    assert only_udp_off.feature.network.outgoing.tcp
    assert not only_udp_off.feature.network.outgoing.udp


def test_flags_win_over_a_shorthand_in_the_file(workdir: Path) -> None:
    path = workdir / "c.json"
    path.write_text('{"feature": {"fs": "local", "network": {"incoming": false}}}')
    cfg = load_config(path, CliOverrides(fs_mode=FsMode.WRITE, steal=True))
    assert cfg.feature.fs.mode is FsMode.WRITE
    assert cfg.feature.network.incoming.mode is IncomingMode.STEAL
