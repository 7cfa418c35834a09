from pathlib import Path

import pytest
import yaml

from marco_operator.rbac import (
    NAMESPACE_SCAN_RULES,
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


def test_one_rule_per_resource_and_only_children_are_deleted():
    # What the rules hold is derived from the operator's real calls in
    # tests/integration/operator (test_the_operator_needs_exactly_the_rbac_rules...).
    by_key = {(r.api_group, r.resource): set(r.verbs) for r in OPERATOR_RULES}
    assert len(by_key) == len(OPERATOR_RULES), "one rule per resource"
    # Children go with their owner through garbage collection; the operator deletes one by
    # one (never a collection) only the kinds it creates: an earlier adaptation's leftovers,
    # and a retried stage's failed Job.
    deleting = {key for key, verbs in by_key.items() if "delete" in verbs}
    assert deleting == {
        ("batch", "jobs"),
        ("", "configmaps"),
        ("", "services"),
        ("scheduling.volcano.sh", "podgroups"),
        ("scheduling.x-k8s.io", "podgroups"),
    }
    assert not any("deletecollection" in r.verbs for r in OPERATOR_RULES)
    # Secrets: created (each adaptation's endpoint token), never read: the operator derives
    # the token again from its key (endpoint_auth), so no Secret of anyone's is readable.
    assert by_key[("", "secrets")] == {"create"}


#: Resources the Kubernetes API serves without a namespace (Kubernetes API reference; kept
#: here, not taken from rbac.CLUSTER_SCOPED, which is what is checked): a Role cannot grant
#: them, only a ClusterRole.
KUBERNETES_CLUSTER_SCOPED = {
    ("", "namespaces"),
    ("", "nodes"),
    ("", "persistentvolumes"),
    ("apiextensions.k8s.io", "customresourcedefinitions"),
    ("rbac.authorization.k8s.io", "clusterroles"),
    ("rbac.authorization.k8s.io", "clusterrolebindings"),
    ("storage.k8s.io", "storageclasses"),
    ("scheduling.k8s.io", "priorityclasses"),
    ("admissionregistration.k8s.io", "validatingwebhookconfigurations"),
    ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"),
    ("kopf.dev", "clusterkopfpeerings"),
}


def test_namespaced_roles_hold_no_cluster_scoped_resource():
    for peering in (False, True):
        held = {(r.api_group, r.resource) for r in namespaced_rules(peering=peering)}
        assert held & KUBERNETES_CLUSTER_SCOPED == set(), peering
    # What the operator needs of those goes to the small ClusterRole instead.
    needed = {(r.api_group, r.resource) for r in OPERATOR_RULES} & KUBERNETES_CLUSTER_SCOPED
    assert needed <= {(r.api_group, r.resource) for r in namespaced_cluster_rules()}
    assert [r.resource for r in namespaced_cluster_rules()] == [
        "customresourcedefinitions",
        "namespaces",
    ]
    assert set(namespaced_rules()) | set(namespaced_cluster_rules()) == set(OPERATOR_RULES) | set(
        NAMESPACE_SCAN_RULES
    )


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
