"""The chart grants the operator exactly OPERATOR_RULES: no more, no less, no wildcard."""

from __future__ import annotations

import shutil
from pathlib import Path

import kubernetes_validate
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
from tests.integration.deploy.chart import NAMESPACE, RELEASE, VALUE_SETS, of_kind, one, render

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


def bound(manifests: list[dict]) -> list[dict]:
    """The ClusterRoles some binding grants: the operator's (the aggregated tenant roles
    are bound by nobody in the chart)."""
    bindings = of_kind(manifests, "ClusterRoleBinding") + of_kind(manifests, "RoleBinding")
    names = {b["roleRef"]["name"] for b in bindings if b["roleRef"]["kind"] == "ClusterRole"}
    return [r for r in of_kind(manifests, "ClusterRole") if r["metadata"]["name"] in names]


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
    (role,) = bound(manifests)
    assert granted([role]) == expected(OPERATOR_RULES)
    binding = one(manifests, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]


def test_namespaced_grants_the_namespaced_rules_per_namespace(helm):
    manifests = render(helm, VALUE_SETS["namespaced"])
    roles = of_kind(manifests, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["asr-team-a", "asr-team-b"]
    for role in roles:
        assert granted([role]) == expected(namespaced_rules())
    cluster = granted(bound(manifests))
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
    assert granted(bound(cluster)) == expected(OPERATOR_RULES + CLUSTER_PEERING_RULES)


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
    drifted = granted(bound(render(helm)))
    assert drifted != expected(OPERATOR_RULES)
    jobs = next(r for r in OPERATOR_RULES if r.resource == "jobs")
    assert ("batch", "jobs", frozenset({*jobs.verbs, "deletecollection"})) in drifted


AGGREGATE = "rbac.authorization.k8s.io/aggregate-to-"
FULLNAME = f"{RELEASE}-marco-asr"
# What a namespace's editors and viewers may do, spelled here independently of rbac.py:
# editors create, change and delete AsrAdaptations; everyone reads; only the operator
# writes the status.
READ = frozenset({"get", "list", "watch"})
EDIT = READ | {"create", "update", "patch", "delete"}
TENANT_EDIT = {("asr.marco.dev", "asradaptations", EDIT),
               ("asr.marco.dev", "asradaptations/status", READ)}  # fmt: skip
TENANT_VIEW = {("asr.marco.dev", "asradaptations", READ),
               ("asr.marco.dev", "asradaptations/status", READ)}  # fmt: skip


def aggregated(manifests: list[dict]) -> dict[str, dict]:
    return {
        r["metadata"]["name"]: r
        for r in of_kind(manifests, "ClusterRole")
        if any(key.startswith(AGGREGATE) for key in r["metadata"]["labels"])
    }


def aggregation_labels(role: dict) -> dict[str, str]:
    return {k: v for k, v in role["metadata"]["labels"].items() if k.startswith(AGGREGATE)}


def test_tenant_roles_aggregate_into_edit_admin_and_view_with_only_their_verbs(helm):
    manifests = render(helm)
    roles = aggregated(manifests)
    assert set(roles) == {f"{FULLNAME}-edit", f"{FULLNAME}-view"}
    edit, view = roles[f"{FULLNAME}-edit"], roles[f"{FULLNAME}-view"]
    assert aggregation_labels(edit) == {f"{AGGREGATE}edit": "true", f"{AGGREGATE}admin": "true"}
    assert aggregation_labels(view) == {f"{AGGREGATE}view": "true"}
    assert granted([edit]) == TENANT_EDIT
    assert granted([view]) == TENANT_VIEW
    # One rule per resource: `granted` would hide a second rule adding verbs to the first.
    assert all(len(role["rules"]) == 2 for role in (edit, view))
    assert edit.get("aggregationRule") is None and view.get("aggregationRule") is None
    # Bound to nobody here: the built-in roles they join are what users are bound to.
    assert bound(manifests) == [
        r for r in of_kind(manifests, "ClusterRole") if r["metadata"]["name"] == FULLNAME
    ]
    for role in (edit, view):
        kubernetes_validate.validate(role, chart.KUBE_VERSION, strict=True)


@pytest.mark.parametrize(
    ("sets", "present"),
    [
        (["rbac.aggregatedRoles=false"], False),
        (["rbac.create=false"], False),
        (["rbac.create=false", "rbac.aggregatedRoles=true"], False),
        (["rbac.aggregatedRoles=true"], True),
        (["watch.scope=namespaced", "watch.namespaces={asr}"], True),
    ],
)
def test_tenant_roles_follow_their_values(helm, sets, present):
    manifests = render(helm, sets=sets)
    expected_names = {f"{FULLNAME}-edit", f"{FULLNAME}-view"} if present else set()
    assert set(aggregated(manifests)) == expected_names
    for manifest in manifests:
        kubernetes_validate.validate(manifest, chart.KUBE_VERSION, strict=True)


def test_schema_refuses_a_bad_aggregated_roles_value(helm):
    result = chart.helm_template(helm, sets=["rbac.aggregatedRoles=sometimes"])
    assert result.returncode != 0
    assert "aggregatedRoles" in result.stderr, result.stderr
