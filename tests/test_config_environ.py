"""mirrord's MIRRORD_* variables set their keys here too, with mirrord's precedence:
flag > variable > file > default; a bad value names the variable; the CLI reads them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mirrord_trace.config import ConfigError, FsMode, IncomingMode, load_config
from mirrord_trace.config.environ import VARIABLES
from mirrord_trace.config.keys import KEYS
from mirrord_trace.config.overrides import CliOverrides
from mirrord_trace.exec_flags import flag_settings


def test_every_variable_sets_a_key_mirrord_has() -> None:
    assert len(VARIABLES) >= 55
    for variable, (key, _) in VARIABLES.items():
        assert variable.startswith("MIRRORD_")
        assert key in KEYS, (variable, key)


def test_variables_set_their_keys() -> None:
    cfg = load_config(
        None,
        environ={
            "MIRRORD_IMPERSONATED_TARGET": "pod/web/container/app",
            "MIRRORD_TARGET_NAMESPACE": "shop",
            "MIRRORD_AGENT_NAMESPACE": "agents",
            "MIRRORD_AGENT_IMAGE": "reg.local/agent:2",
            "MIRRORD_AGENT_TTL": "30",
            "MIRRORD_AGENT_STARTUP_TIMEOUT": "7200",
            "MIRRORD_EPHEMERAL_CONTAINER": "true",
            "MIRRORD_FILE_MODE": "local",
            "MIRRORD_FILE_LOCAL_PATTERN": "^/app;^/srv",
            "MIRRORD_OVERRIDE_ENV_VARS_INCLUDE": "DB_*;API",
            "MIRRORD_REMOTE_DNS": "false",
            "MIRRORD_TCP_OUTGOING": "false",
            "MIRRORD_AGENT_TCP_STEAL_TRAFFIC": "true",
            "MIRRORD_HTTP_HEADER_FILTER": "^x-user: me$",
            "MIRRORD_HTTP_FILTER_PORTS": "80;8080",
            "MIRRORD_KUBE_CONTEXT": "staging",
            "MIRRORD_ACCEPT_INVALID_CERTIFICATES": "true",
            "MIRRORD_KEY": "session-1",
        },
    )
    assert str(cfg.target.path) == "pod/web/container/app"
    assert cfg.target.namespace == "shop"
    agent = cfg.agent
    assert (agent.namespace, agent.image, agent.ttl) == ("agents", "reg.local/agent:2", 30)
    assert agent.startup_timeout == 7200 and agent.ephemeral
    fs = cfg.feature.fs
    assert fs.mode is FsMode.LOCAL and [p.pattern for p in fs.local] == ["^/app", "^/srv"]
    assert cfg.feature.env.include == ("DB_*", "API")
    network = cfg.feature.network
    assert not network.dns.enabled and not network.outgoing.tcp and network.outgoing.udp
    assert network.incoming.mode is IncomingMode.STEAL
    http_filter = network.incoming.http_filter
    assert http_filter.wire == {"header": "^x-user: me$"} and http_filter.ports == (80, 8080)
    assert (cfg.kube_context, cfg.accept_invalid_certificates, cfg.key) == (
        "staging",
        True,
        "session-1",
    )


def test_precedence_flag_over_variable_over_file(tmp_path: Path) -> None:
    path = tmp_path / "mirrord.json"
    path.write_text('{"agent": {"namespace": "from-file", "ttl": 5}, "feature": {"fs": "write"}}')
    assert load_config(path, environ={}).agent.namespace == "from-file"
    environ = {"MIRRORD_AGENT_NAMESPACE": "from-env"}
    cfg = load_config(path, environ=environ)
    # The variable wins for its key, the file keeps the others (and its shorthand's meaning).
    assert (cfg.agent.namespace, cfg.agent.ttl) == ("from-env", 5)
    assert cfg.feature.fs.mode is FsMode.WRITE
    flags = CliOverrides(settings=flag_settings({"agent_namespace": "from-flag"}))
    assert load_config(path, flags, environ=environ).agent.namespace == "from-flag"


def test_a_variable_inside_a_shorthand_keeps_the_shorthand(tmp_path: Path) -> None:
    path = tmp_path / "mirrord.json"
    path.write_text(
        '{"target": "pod/web", "feature": {"fs": "write", "network": {"incoming": "steal"}}}'
    )
    cfg = load_config(
        path,
        environ={
            "MIRRORD_TARGET_NAMESPACE": "shop",
            "MIRRORD_FILE_READ_ONLY_PATTERN": "^/etc",
            "MIRRORD_HTTP_PATH_FILTER": "^/api",
        },
    )
    assert (str(cfg.target.path), cfg.target.namespace) == ("pod/web", "shop")
    assert cfg.feature.fs.mode is FsMode.WRITE and cfg.feature.fs.read_only
    assert cfg.feature.network.incoming.mode is IncomingMode.STEAL


@pytest.mark.parametrize(
    ("environ", "fragment"),
    [
        ({"MIRRORD_AGENT_TTL": "soon"}, "MIRRORD_AGENT_TTL='soon' is not a whole number"),
        ({"MIRRORD_REMOTE_DNS": "yes"}, "MIRRORD_REMOTE_DNS='yes' is not true or false"),
        ({"MIRRORD_AGENT_TTL": "70000"}, "agent.ttl: 70000 is not an integer from 0 to 65535"),
        ({"MIRRORD_IMPERSONATED_TARGET": "cat/x"}, "target.path: 'cat/x'"),
    ],
)
def test_a_bad_value_names_the_variable(environ: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, environ=environ)
    assert fragment in str(caught.value)
    assert "MIRRORD_" in str(caught.value) + caught.value.hint


def test_mirrords_older_file_ops_pair() -> None:
    assert load_config(None, environ={"MIRRORD_FILE_OPS": "true"}).feature.fs.mode is FsMode.WRITE
    mode = load_config(None, environ={"MIRRORD_FILE_RO_OPS": "true"}).feature.fs.mode
    assert mode is FsMode.READ
    mode = load_config(None, environ={"MIRRORD_FILE_OPS": "false"}).feature.fs.mode
    assert mode is FsMode.LOCAL


def test_variables_of_ignored_keys_warn_and_operator_ones_fail() -> None:
    cfg = load_config(None, environ={"MIRRORD_AGENT_JSON_LOG": "true"})
    assert cfg.warnings[0].startswith("agent.json_log: ignored")
    with pytest.raises(ConfigError, match="needs mirrord's operator"):
        load_config(None, environ={"MIRRORD_OPERATOR_ENABLE": "true"})
    assert load_config(None, environ={"MIRRORD_OPERATOR_ENABLE": "false"}).warnings == ()


def run_cli(
    *args: str, environ: dict[str, str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], **(environ or {})}
    return subprocess.run(
        [sys.executable, "-m", "mirrord_trace", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )


def test_cli_reads_the_config_file_variable_stdin_and_env_file(tmp_path: Path) -> None:
    show = ["--", "sh", "-c", 'echo "$GREETING"']
    path = tmp_path / "mirrord.json"
    path.write_text('{"feature": {"env": {"override": {"GREETING": "from-file"}}}}')
    result = run_cli("exec", *show, environ={"MIRRORD_CONFIG_FILE": str(path)})
    assert (result.returncode, result.stdout) == (0, "from-file\n"), result.stderr
    stdin = '{"feature": {"env": {"override": {"GREETING": "from-stdin"}}}}'
    result = run_cli("exec", "-f", "-", *show, stdin=stdin)
    assert (result.returncode, result.stdout) == (0, "from-stdin\n"), result.stderr
    env_file = tmp_path / ".env"
    env_file.write_text("# comment\nexport GREETING='from env file'\n")
    result = run_cli("exec", "--env-file", str(env_file), *show)
    assert (result.returncode, result.stdout) == (0, "from env file\n"), result.stderr


def test_cli_bare_f_means_the_mirrord_directory(tmp_path: Path) -> None:
    (tmp_path / ".mirrord").mkdir()
    (tmp_path / ".mirrord" / "mirrord.json").write_text(
        '{"feature": {"env": {"override": {"GREETING": "bare-f"}}}}'
    )
    result = subprocess.run(
        [sys.executable, "-m", "mirrord_trace", "exec", "-f", "--", "sh", "-c", 'echo "$GREETING"'],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    assert (result.returncode, result.stdout) == (0, "bare-f\n"), result.stderr


def test_cli_mirrord_flags_are_accepted_and_checked() -> None:
    result = run_cli(
        "exec",
        "-c",
        "--no-telemetry",
        "--disable-version-check",
        "-k",
        "me",
        "--fs-mode",
        "local-with-overrides",
        "-e",
        "--agent-startup-timeout",
        "7200",
        "-i",
        "reg.local/agent:1",
        "-l",
        "mirrord=debug,warn",
        "--",
        "true",
    )
    assert result.returncode == 0, result.stderr
    # -l sets agent.log_level, which does nothing here: said once, on stderr.
    assert result.stderr.startswith("mirrord-trace: warning: agent.log_level: ignored")
    result = run_cli("exec", "-a", "Bad_NS", "--", "true")
    assert result.returncode == 2
    assert result.stderr == (
        "mirrord-trace: error: config error: agent.namespace: 'Bad_NS' is not a namespace name "
        "(up to 63 lowercase letters, digits and '-') "
        "(fix agent.namespace in the -a/--agent-namespace flag)\n"
    )


def test_cli_impersonated_target_variable_is_not_ignored() -> None:
    # mirrord's IDE extensions pass the target this way: it must be used, never dropped.
    result = run_cli("exec", "--", "true", environ={"MIRRORD_IMPERSONATED_TARGET": "pid/999999999"})
    assert result.returncode != 0
    assert "999999999" in result.stderr


def test_a_missing_config_file_variable_says_which_variable() -> None:
    result = run_cli("exec", "--", "true", environ={"MIRRORD_CONFIG_FILE": "/no/such.json"})
    assert result.returncode == 2
    assert result.stderr == (
        "mirrord-trace: error: config error: /no/such.json: no such file "
        "(check the path in the MIRRORD_CONFIG_FILE variable)\n"
    )


def test_the_agent_image_variable_only_fills_in_what_the_file_leaves_out(tmp_path: Path) -> None:
    environ = {"MIRRORD_AGENT_IMAGE": "reg.local/from-env:1"}
    assert load_config(None, environ=environ).agent.image == "reg.local/from-env:1"
    path = tmp_path / "mirrord.json"
    path.write_text('{"agent": {"image": "reg.local/from-file:1"}}')
    # A project's file names its own image over the user's usual one (no public image here).
    assert load_config(path, environ=environ).agent.image == "reg.local/from-file:1"
    flags = CliOverrides(settings=flag_settings({"agent_image": "reg.local/from-flag:1"}))
    assert load_config(path, flags, environ=environ).agent.image == "reg.local/from-flag:1"


def test_an_empty_variable_counts_as_unset() -> None:
    assert load_config(None, environ={"MIRRORD_AGENT_IMAGE": "", "MIRRORD_AGENT_TTL": ""}) == (
        load_config(None, environ={})
    )
