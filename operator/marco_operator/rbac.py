"""`marco rbac`: the operator's API rights, declared once and rendered for the Helm chart.

`OPERATOR_RULES` is the single list of what the operator (its kopf driver and
core) does against the API. The chart never spells rules itself: its templates
read `files/rules.yaml`, which this module writes, and a test renders the chart
and compares the granted rules with this list. Every verb and resource is
named; a wildcard would make the comparison meaningless, so `policy_rule`
refuses one.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any, NamedTuple

import yaml

from marco_operator.api import GROUP, PLURAL
from marco_operator.generated import add_generator
from marco_operator.resources import POD_GROUP_API

RULES_FILE = "rules.yaml"


class Rule(NamedTuple):
    api_group: str
    resource: str
    verbs: tuple[str, ...]


#: The train Job's PodGroup under spec.resources.gangScheduling, in either scheduler's group:
#: created before the Job, read after a 409 for its owner, an earlier adaptation's deleted
#: (it goes with its adaptation by garbage collection, as the other children do).
GANG_RULES: tuple[Rule, ...] = tuple(
    Rule(group, "podgroups", ("get", "create", "delete"))
    for group in sorted({api.split("/")[0] for api in POD_GROUP_API.values()})
)

OPERATOR_RULES: tuple[Rule, ...] = (
    # The custom resource: kopf lists and watches it (a pass works on the watched body) and
    # patches its finalizer and progress annotations.
    Rule(GROUP, PLURAL, ("list", "watch", "patch")),
    Rule(GROUP, f"{PLURAL}/status", ("patch",)),
    # Stage Jobs: created, watched; read after a 409 on create for its owner (a Job of that
    # name the watch does not select: no labels of ours); deleted when an earlier adaptation
    # of the same name left them, when a failed stage is retried, or when a stop is not
    # honoured (never suspended or patched: with Kueue, spec.suspend is Kueue's).
    Rule("batch", "jobs", ("get", "list", "watch", "create", "delete")),
    # Stage pods are watched (kopf's index) for rank 0's IP and the termination messages,
    # never changed.
    Rule("", "pods", ("list", "watch")),
    # The `<name>-control` ConfigMap carries the directive to the trainer. Watched (kopf's
    # index: whether one exists, and whose); read by each pass once one of ours does (the
    # directive fresh) and after a 409 for its owner; an earlier adaptation's is deleted.
    Rule("", "configmaps", ("get", "list", "watch", "create", "patch", "delete")),
    # The headless rendezvous Service for torchrun: watched (kopf's index) for its owner,
    # read after a 409 on create; an earlier adaptation's deleted.
    Rule("", "services", ("get", "list", "watch", "create", "delete")),
    # The `<name>-endpoint-<uid>` Secret holding rank 0's bearer token: created, never
    # read (the operator derives the token again from its key; the uid in its name means a
    # 409 can only be its own).
    Rule("", "secrets", ("create",)),
    # The spec's PersistentVolumeClaims, read before the first Job: missing, or without
    # ReadWriteMany where pods mount them at once (storage.py). Never changed.
    Rule("", "persistentvolumeclaims", ("get",)),
    # Events on every phase change and decision (core v1, as kopf posts them); listed (by
    # involvedObject) for a stage Job left without pods, to say why (FailedCreate).
    Rule("", "events", ("create", "list")),
    # kopf's resource scanning.
    Rule("apiextensions.k8s.io", "customresourcedefinitions", ("list", "watch")),
    *GANG_RULES,
)
"""Exactly the calls the operator makes serving the whole cluster: an integration test
derives them from the requests of a full run against the API emulator."""

#: kopf lists and watches namespaces when it serves named namespaces (to follow them
#: appearing and going); serving the whole cluster, it does not.
NAMESPACE_SCAN_RULES: tuple[Rule, ...] = (Rule("", "namespaces", ("list", "watch")),)

#: Resources without a namespace: grantable only by a ClusterRole.
CLUSTER_SCOPED: frozenset[tuple[str, str]] = frozenset(
    {("apiextensions.k8s.io", "customresourcedefinitions"), ("", "namespaces")}
)

# kopf's peering (several replicas, one active) keeps its state in kopf.dev
# objects, not in coordination.k8s.io Leases: ClusterKopfPeering when serving the
# cluster, KopfPeering per namespace otherwise.
PEERING_VERBS = ("get", "list", "watch", "patch")
CLUSTER_PEERING_RULES: tuple[Rule, ...] = (Rule("kopf.dev", "clusterkopfpeerings", PEERING_VERBS),)
NAMESPACED_PEERING_RULES: tuple[Rule, ...] = (Rule("kopf.dev", "kopfpeerings", PEERING_VERBS),)

# What people, not the operator, may do with AsrAdaptations: the chart aggregates these
# into the built-in ClusterRoles, so that a namespace's `edit` and `admin` create and
# change them and its `view` reads them. Only the operator writes the status: both read it.
TENANT_READ_VERBS = ("get", "list", "watch")
TENANT_EDIT_RULES: tuple[Rule, ...] = (
    Rule(GROUP, PLURAL, (*TENANT_READ_VERBS, "create", "update", "patch", "delete")),
    Rule(GROUP, f"{PLURAL}/status", TENANT_READ_VERBS),
)
TENANT_VIEW_RULES: tuple[Rule, ...] = (
    Rule(GROUP, PLURAL, TENANT_READ_VERBS),
    Rule(GROUP, f"{PLURAL}/status", TENANT_READ_VERBS),
)


def _key(rule: Rule) -> tuple[str, str]:
    return (rule.api_group, rule.resource)


def cluster_wide_rules(peering: bool = False) -> tuple[Rule, ...]:
    """The ClusterRole of an operator started with `--all-namespaces`."""
    return OPERATOR_RULES + (CLUSTER_PEERING_RULES if peering else ())


def namespaced_rules(peering: bool = False) -> tuple[Rule, ...]:
    """The Role granted in each watched namespace of an operator started with `--namespace`."""
    own = tuple(r for r in OPERATOR_RULES if _key(r) not in CLUSTER_SCOPED)
    return own + (NAMESPACED_PEERING_RULES if peering else ())


def namespaced_cluster_rules() -> tuple[Rule, ...]:
    """The small ClusterRole a namespaced operator still needs (cluster-scoped reads)."""
    return tuple(r for r in OPERATOR_RULES if _key(r) in CLUSTER_SCOPED) + NAMESPACE_SCAN_RULES


def policy_rule(rule: Rule) -> dict[str, Any]:
    if "*" in rule.verbs or "*" in rule.resource or rule.api_group == "*":
        raise ValueError(f"wildcard in RBAC rule {rule}: name every verb and resource")
    return {"apiGroups": [rule.api_group], "resources": [rule.resource], "verbs": list(rule.verbs)}


def policy_rules(rules: Iterable[Rule]) -> list[dict[str, Any]]:
    return [policy_rule(rule) for rule in rules]


def rule_sets() -> dict[str, list[dict[str, Any]]]:
    """Every rule list the chart's templates pick from, by name."""
    return {
        "clusterWide": policy_rules(cluster_wide_rules()),
        "clusterWidePeering": policy_rules(CLUSTER_PEERING_RULES),
        "namespaced": policy_rules(namespaced_rules()),
        "namespacedPeering": policy_rules(NAMESPACED_PEERING_RULES),
        "namespacedCluster": policy_rules(namespaced_cluster_rules()),
        "tenantEdit": policy_rules(TENANT_EDIT_RULES),
        "tenantView": policy_rules(TENANT_VIEW_RULES),
    }


def render_rules() -> str:
    header = "# Generated by `marco rbac` from marco_operator/rbac.py. Do not edit.\n"
    return header + yaml.safe_dump(rule_sets(), sort_keys=False, width=100)


def register(subparsers: argparse._SubParsersAction) -> None:
    add_generator(
        subparsers,
        "rbac",
        "write the operator's RBAC rules for the chart",
        render_rules,
        RULES_FILE,
    )
