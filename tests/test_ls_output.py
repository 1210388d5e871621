"""`ls` answers as `mirrord ls` does for IDE extensions and scripts: the JSON array, the rich
JSON object (MIRRORD_LS_RICH_OUTPUT), the target-type filter (-t, MIRRORD_LS_TARGET_TYPES).
Against the stand-in API server (it answers as the real one; see tests/kube_standin)."""

from __future__ import annotations

import json

from tests.kube_standin.fixtures import (  # noqa: F401
    KubeCli,
    kube_fixture,
    standin_fixture,
)


def populate(kube: KubeCli) -> None:
    kube.cluster.add_pod("app", ["app"])
    kube.cluster.add_deployment("shop", {"app": "app"})
    kube.cluster.add_namespace("prod")


def test_rich_output_lists_targets_and_namespaces(kube: KubeCli) -> None:
    populate(kube)
    result = kube.run("ls", MIRRORD_LS_RICH_OUTPUT="true")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["targets"] == [
        {"path": "pod/app", "available": True},
        {"path": "deployment/shop", "available": True},
    ]
    assert answer["current_namespace"] == "default"
    assert {"default", "prod"} <= set(answer["namespaces"])


def test_rich_output_without_permission_to_list_namespaces(kube: KubeCli) -> None:
    populate(kube)
    kube.cluster.rbac_rules = [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["list"]},
    ]
    result = kube.run("ls", MIRRORD_LS_RICH_OUTPUT="true")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["namespaces"] == ["default"]


def test_target_types_from_the_flag_or_mirrords_variable(kube: KubeCli) -> None:
    populate(kube)
    result = kube.run("ls", "-o", "json", "-t", "deployment")
    assert json.loads(result.stdout) == ["deployment/shop"]
    result = kube.run("ls", "-o", "json", MIRRORD_LS_TARGET_TYPES='["pod"]')
    assert json.loads(result.stdout) == ["pod/app"]
    result = kube.run("ls", "-o", "json", "-t", "rollout")
    assert json.loads(result.stdout) == []
    result = kube.run("ls", MIRRORD_LS_TARGET_TYPES="pods")
    assert result.returncode == 2
    assert result.stderr.startswith(
        "mirrord-trace: error: MIRRORD_LS_TARGET_TYPES='pods' is not a JSON array of targetless,"
    )
