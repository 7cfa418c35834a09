from pathlib import Path

import pytest
import yaml

from marco_operator.api import GROUP, PLURAL
from marco_operator.rbac import (
    CLUSTER_SCOPED,
    OPERATOR_RULES,
    Rule,
    cluster_wide_rules,
    namespaced_cluster_rules,
    namespaced_rules,
    policy_rule,
    render_rules,
    rule_sets,
)

ROOT = Path(__file__).resolve().parents[3]
COMMITTED = ROOT / "charts" / "marco-asr" / "files" / "rules.yaml"


def test_committed_rules_are_the_generated_ones():
    assert COMMITTED.read_text() == render_rules(), "run `make chart-rbac`"
    assert yaml.safe_load(COMMITTED.read_text()) == rule_sets()


def test_the_operator_may_do_what_it_does_and_no_more():
    by_key = {(r.api_group, r.resource): set(r.verbs) for r in OPERATOR_RULES}
    assert len(by_key) == len(OPERATOR_RULES), "one rule per resource"
    assert by_key[(GROUP, PLURAL)] == {"get", "list", "watch", "patch"}
    assert by_key[(GROUP, f"{PLURAL}/status")] == {"get", "patch", "update"}
    assert by_key[("batch", "jobs")] == {"get", "list", "watch", "create", "patch"}
    assert by_key[("", "pods")] == {"get", "list", "watch"}
    assert by_key[("", "services")] == {"get", "create"}
    assert by_key[("", "events")] == by_key[("events.k8s.io", "events")] == {"create", "patch"}
    # Nothing deletes: children go with their owner through garbage collection.
    assert not any("delete" in r.verbs or "deletecollection" in r.verbs for r in OPERATOR_RULES)
    assert ("", "secrets") not in by_key


def test_namespaced_roles_hold_no_cluster_scoped_resource():
    assert all((r.api_group, r.resource) not in CLUSTER_SCOPED for r in namespaced_rules())
    assert [r.resource for r in namespaced_cluster_rules()] == ["customresourcedefinitions"]
    assert set(namespaced_rules()) | set(namespaced_cluster_rules()) | {
        r for r in OPERATOR_RULES if r.resource == "namespaces"
    } == set(OPERATOR_RULES)


def test_peering_grants_the_kopf_peering_objects():
    extra = set(cluster_wide_rules(peering=True)) - set(cluster_wide_rules())
    assert {(r.api_group, r.resource) for r in extra} == {("kopf.dev", "clusterkopfpeerings")}
    extra = set(namespaced_rules(peering=True)) - set(namespaced_rules())
    assert {(r.api_group, r.resource) for r in extra} == {("kopf.dev", "kopfpeerings")}


@pytest.mark.parametrize(
    "rule",
    [Rule("", "pods", ("*",)), Rule("", "*", ("get",)), Rule("*", "jobs", ("get",))],
)
def test_wildcards_are_refused(rule):
    with pytest.raises(ValueError, match="wildcard"):
        policy_rule(rule)
