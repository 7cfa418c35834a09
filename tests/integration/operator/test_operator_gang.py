"""Gang scheduling against the kopf driver on kmock's emulator: the train Job's PodGroup is
created before the Job and owned by the adaptation (the garbage collector deletes it with
it); an earlier adaptation's PodGroup is deleted, not adopted; a cluster without the
PodGroup CRD gets a condition and an Event that say so, and the run goes on once it has it.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from marco_operator.rbac import GANG_RULES, OPERATOR_RULES
from marco_operator.resources import Owner, labels, metadata

from .harness import NAMESPACE, EmulatedCluster, JobController, OperatorRun, wait_for
from .test_operator_kopf import NAME, ONLY_TRAINING, condition, make_spec, phase_is

pytestmark = pytest.mark.timeout(60)

VOLCANO = "scheduling.volcano.sh/v1beta1"
COSCHEDULING = "scheduling.x-k8s.io/v1alpha1"
GROUP = f"{NAME}-train"


def pod_group(cluster: EmulatedCluster, api: str) -> dict[str, Any] | None:
    return cluster.kube.get(cluster.path(api, "podgroups", GROUP))


def gang_spec(scheduler: str, nodes: int = 2) -> dict[str, Any]:
    return make_spec(
        **ONLY_TRAINING, resources={"nodes": nodes, "gangScheduling": {"scheduler": scheduler}}
    )


@pytest.mark.parametrize(
    ("scheduler", "api"), [("volcano", VOLCANO), ("coscheduling", COSCHEDULING)]
)
def test_the_pod_group_comes_before_the_train_job_and_belongs_to_the_adaptation(
    cluster: EmulatedCluster, jobs: JobController, operator: OperatorRun, scheduler: str, api: str
) -> None:
    cluster.apply_adaptation(NAME, gang_spec(scheduler, nodes=3))
    job = jobs.wait_job(NAME, "train")
    group = pod_group(cluster, api)
    assert group is not None, "the PodGroup exists once its Job does"
    # The API server numbers writes in order: the PodGroup was written before the Job.
    assert int(group["metadata"]["resourceVersion"]) < int(job["metadata"]["resourceVersion"])
    assert group["spec"]["minMember"] == 3
    uid = cluster.adaptation(NAME)["metadata"]["uid"]
    (owner,) = group["metadata"]["ownerReferences"]
    # What the garbage collector deletes it by, with the adaptation.
    assert (owner["kind"], owner["name"], owner["uid"]) == ("AsrAdaptation", NAME, uid)
    assert owner["controller"] is True and owner["blockOwnerDeletion"] is True
    # Only the spec's scheduler's kind.
    other = COSCHEDULING if api == VOLCANO else VOLCANO
    assert pod_group(cluster, other) is None
    template = job["spec"]["template"]
    expected_scheduler = {"volcano": "volcano", "coscheduling": "scheduler-plugins-scheduler"}
    assert template["spec"]["schedulerName"] == expected_scheduler[scheduler]
    # The pods the Job controller makes carry the membership of the template.
    jobs.start(job)
    pods = cluster.kube.list(cluster.path("v1", "pods"), {"job-name": job["metadata"]["name"]})
    assert len(pods) == 3
    for pod in pods:
        if scheduler == "volcano":
            assert pod["metadata"]["annotations"]["scheduling.k8s.io/group-name"] == GROUP
        else:
            assert pod["metadata"]["labels"]["scheduling.x-k8s.io/pod-group"] == GROUP
    wait_for("phase Training", phase_is(cluster, "Training"))


def leave_pod_group(cluster: EmulatedCluster) -> str:
    """A Volcano PodGroup an earlier adaptation of this name left (no garbage collector here)."""
    old = Owner(name=NAME, namespace=NAMESPACE, uid=str(uuid.uuid4()))
    cluster.kube.create({
        "apiVersion": VOLCANO, "kind": "PodGroup",
        "metadata": metadata(old, GROUP, "train"),
        "spec": {"minMember": 5},
    })  # fmt: skip
    assert (
        labels(old, "train")
        == cluster.kube.get(cluster.path(VOLCANO, "podgroups", GROUP))["metadata"]["labels"]
    )
    return old.uid


def test_an_earlier_adaptation_s_pod_group_is_deleted_and_replaced(
    cluster: EmulatedCluster, jobs: JobController, operator: OperatorRun
) -> None:
    old_uid = leave_pod_group(cluster)
    cluster.apply_adaptation(NAME, gang_spec("volcano"))
    jobs.wait_job(NAME, "train")
    group = pod_group(cluster, VOLCANO)
    assert group is not None
    uid = cluster.adaptation(NAME)["metadata"]["uid"]
    assert group["metadata"]["ownerReferences"][0]["uid"] == uid != old_uid
    assert group["spec"]["minMember"] == 2
    deleted = [p for p, _ in cluster.deletions if p.endswith(f"/podgroups/{GROUP}")]
    assert deleted == [cluster.path(VOLCANO, "podgroups", GROUP)]
    # Exactly the PodGroup rights of the chart's rules were used, in Volcano's group.
    used = {rule for rule in cluster.operator_rbac() if rule[1] == "podgroups"}
    granted = {(r.api_group, r.resource, v) for r in GANG_RULES for v in r.verbs}
    assert used == {rule for rule in granted if rule[0] == "scheduling.volcano.sh"}
    assert set(GANG_RULES) <= set(OPERATOR_RULES)


def test_a_cluster_without_the_pod_group_crd_says_so_and_goes_on_once_it_has_it(
    cluster: EmulatedCluster, jobs: JobController, operator: OperatorRun
) -> None:
    # What the API server answers for a resource it does not serve.
    cluster.refuse(
        "podgroups", GROUP, 404, "NotFound", "the server could not find the requested resource"
    )
    cluster.apply_adaptation(NAME, gang_spec("volcano"))
    status = wait_for(
        "Reconciled False, GangSchedulerMissing",
        lambda: (
            (s := cluster.status(NAME))
            and any(
                c["type"] == "Reconciled" and c["reason"] == "GangSchedulerMissing"
                for c in s.get("conditions", [])
            )
            and s
        ),
    )
    reconciled = condition(status, "Reconciled")
    assert reconciled["status"] == "False"
    assert reconciled["message"].startswith(
        f"creating PodGroup {GROUP}: the cluster serves no {VOLCANO} PodGroups"
    )
    assert "remove spec.resources.gangScheduling" in reconciled["message"]
    warnings = [
        e
        for e in cluster.events(NAME)
        if (e["type"], e["reason"]) == ("Warning", "GangSchedulerMissing")
    ]
    assert warnings and warnings[0]["message"].startswith(f"creating PodGroup {GROUP}")
    assert cluster.job(NAME, "train") is None, "no Job without its PodGroup"
    # Volcano installed: the next try (the pass's backoff) creates both.
    cluster.allow("podgroups", GROUP)
    job = jobs.wait_job(NAME, "train", timeout=30)
    assert pod_group(cluster, VOLCANO) is not None
    jobs.start(job)
    status = wait_for("phase Training", phase_is(cluster, "Training"))
    assert condition(status, "Reconciled")["status"] == "True"
