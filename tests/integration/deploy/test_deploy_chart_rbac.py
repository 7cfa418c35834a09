"""The chart grants the operator exactly OPERATOR_RULES: no more, no less, no wildcard."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from marco_operator.rbac import (
    CLUSTER_PEERING_RULES,
    NAMESPACE_SCAN_RULES,
    NAMESPACED_PEERING_RULES,
    OPERATOR_RULES,
    Rule,
    namespaced_cluster_rules,
    namespaced_rules,
)
from tests.integration.deploy import chart
from tests.integration.deploy.chart import NAMESPACE, VALUE_SETS, of_kind, one, render

Granted = set[tuple[str, str, frozenset[str]]]


def granted(roles: list[dict]) -> Granted:
    """Every (apiGroup, resource, verbs) a set of Roles/ClusterRoles grants."""
    result: Granted = set()
    for role in roles:
        for rule in role.get("rules", []):
            for group in rule.get("apiGroups", []):
                for resource in rule.get("resources", []):
                    result.add((group, resource, frozenset(rule["verbs"])))
    return result


def expected(rules: tuple[Rule, ...]) -> Granted:
    return {(r.api_group, r.resource, frozenset(r.verbs)) for r in rules}


def wildcards(roles: list[dict]) -> list[str]:
    found = []
    for role in roles:
        for rule in role.get("rules", []):
            for key in ("apiGroups", "resources", "verbs", "nonResourceURLs", "resourceNames"):
                if any("*" in item for item in rule.get(key, [])):
                    found.append(f"{role['kind']}/{role['metadata']['name']}: {key} {rule[key]}")
    return found


@pytest.mark.parametrize("name", VALUE_SETS)
def test_no_wildcard_in_any_rendered_role(helm, name):
    manifests = render(helm, VALUE_SETS[name])
    roles = of_kind(manifests, "ClusterRole") + of_kind(manifests, "Role")
    assert roles
    assert wildcards(roles) == []


def test_cluster_wide_grants_exactly_the_operator_rules(helm):
    manifests = render(helm)
    assert of_kind(manifests, "Role") == []
    assert granted(of_kind(manifests, "ClusterRole")) == expected(OPERATOR_RULES)
    binding = one(manifests, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == one(manifests, "ClusterRole")["metadata"]["name"]


def test_namespaced_grants_the_namespaced_rules_per_namespace(helm):
    manifests = render(helm, VALUE_SETS["namespaced"])
    roles = of_kind(manifests, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["asr-team-a", "asr-team-b"]
    for role in roles:
        assert granted([role]) == expected(namespaced_rules())
    cluster = granted(of_kind(manifests, "ClusterRole"))
    assert cluster == expected(namespaced_cluster_rules())
    # Together: every operator rule, plus the namespace scan kopf makes in this mode.
    everything = granted(roles) | cluster
    assert everything == expected(OPERATOR_RULES) | expected(NAMESPACE_SCAN_RULES)
    bindings = of_kind(manifests, "RoleBinding")
    assert {b["metadata"]["namespace"] for b in bindings} == {"asr-team-a", "asr-team-b"}


def test_peering_adds_only_the_peering_objects(helm):
    namespaced = render(helm, VALUE_SETS["peering"])
    (role,) = of_kind(namespaced, "Role")
    assert granted([role]) == expected(namespaced_rules()) | expected(NAMESPACED_PEERING_RULES)
    cluster = render(helm, sets=["peering.enabled=true", "replicaCount=2"])
    assert granted(of_kind(cluster, "ClusterRole")) == expected(
        OPERATOR_RULES + CLUSTER_PEERING_RULES
    )


@pytest.mark.parametrize("name", VALUE_SETS)
def test_bindings_name_only_the_operator_account(helm, name):
    manifests = render(helm, VALUE_SETS[name])
    accounts = {
        (m["metadata"]["namespace"], m["metadata"]["name"])
        for m in of_kind(manifests, "ServiceAccount")
    }
    operator = (
        NAMESPACE,
        one(manifests, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"],
    )
    assert operator in accounts
    bindings = of_kind(manifests, "ClusterRoleBinding") + of_kind(manifests, "RoleBinding")
    subjects = {(s["namespace"], s["name"]) for b in bindings for s in b["subjects"]}
    assert subjects == {operator}, "only the operator holds API rights; trainers hold none"


def test_a_drifted_rules_file_is_caught(helm, tmp_path, monkeypatch):
    """Edit the chart's rules by hand: the comparison with OPERATOR_RULES must notice."""
    copy = tmp_path / "marco-asr"
    shutil.copytree(chart.CHART, copy)
    rules_file = copy / "files" / "rules.yaml"
    sets = yaml.safe_load(rules_file.read_text())
    sets["clusterWide"][2]["verbs"].append("deletecollection")  # batch jobs
    rules_file.write_text(yaml.safe_dump(sets))
    monkeypatch.setattr(chart, "CHART", Path(copy))
    drifted = granted(of_kind(render(helm), "ClusterRole"))
    assert drifted != expected(OPERATOR_RULES)
    jobs = next(r for r in OPERATOR_RULES if r.resource == "jobs")
    assert ("batch", "jobs", frozenset({*jobs.verbs, "deletecollection"})) in drifted
