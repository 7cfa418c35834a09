"""Children are ours by uid, not by name (issue 13, point 2): `marco operator` against kmock.

An AsrAdaptation deleted and created again under its name finds what the first one left:
kmock has no garbage collector, so the leftovers stay until the operator deletes them, and a
finalizer on one (as another controller may hold it) keeps it there, being deleted, for as
long as a test wants to watch the operator wait. The new run never reads them, and runs on
its own spec. A create that meets an existing object (409) checks whose it is. And a Failed
run is retried through the annotation asr.marco.dev/retry.
"""

from __future__ import annotations

from typing import Any

import pytest

from marco_contract.formats import StageResult
from marco_operator.kube import USER_AGENT

from .harness import NAMESPACE, EmulatedCluster, JobController, OperatorRun, wait_for
from .test_operator_kopf import NAME, ONLY_TRAINING, condition, events_in_order, make_spec

pytestmark = pytest.mark.timeout(60)

HOLD = "example.com/hold"  # a finalizer of someone else's, holding an object being deleted
RETRY = "asr.marco.dev/retry"


def uid(obj: dict[str, Any]) -> str:
    return obj["metadata"]["uid"]


def controller_uid(obj: dict[str, Any]) -> str | None:
    refs = [r for r in obj["metadata"].get("ownerReferences") or [] if r.get("controller")]
    return refs[0]["uid"] if refs else None


def hold(cluster: EmulatedCluster, path: str) -> None:
    cluster.kube.merge_patch(path, {"metadata": {"finalizers": [HOLD]}})


def release(cluster: EmulatedCluster, path: str) -> None:
    cluster.kube.merge_patch(path, {"metadata": {"finalizers": None}})


def operator_calls(cluster: EmulatedCluster, method: str, path: str) -> int:
    return sum(
        1
        for m, p, _, agent in list(cluster.calls)
        if agent == USER_AGENT and (m, p) == (method, path)
    )


def ready_reason(cluster: EmulatedCluster, reason: str):
    return lambda: (
        (
            (s := cluster.status(NAME)).get("conditions")
            and condition(s, "Ready")["reason"] == reason
        )
        and s
    )


def test_a_recreated_adaptation_neither_adopts_nor_reads_its_predecessor_s_jobs(
    cluster: EmulatedCluster, jobs: JobController, operator: OperatorRun
) -> None:
    """The first adaptation's filter Job finished (its pod says 12 lines kept) and stays;
    the new one, of another spec, deletes it, waits for it to go, then runs its own."""
    cluster.leave_predecessor(NAME, stages=("filter",), steered=False)
    old = cluster.job(NAME, "filter")
    assert old is not None
    jobs.complete(old, StageResult(stage="filter", counts={"kept": 12}))
    old_path = cluster.path("batch/v1", "jobs", old["metadata"]["name"])
    hold(cluster, old_path)

    body = cluster.apply_adaptation(NAME, make_spec(data={"train": ["second.jsonl"]}))
    status = wait_for(
        "the wait for the predecessor", ready_reason(cluster, "WaitingForPredecessor")
    )
    assert "Job telephony-filter" in condition(status, "Ready")["message"]
    assert status.get("phase", "Pending") == "Pending"
    assert "filter" not in {
        k for k, v in status.get("stages", {}).items() if v.get("wer") or v.get("counts")
    }
    going = cluster.job(NAME, "filter")
    assert (
        going is not None and uid(going) == uid(old) and going["metadata"].get("deletionTimestamp")
    )
    assert [e["type"] for e in events_in_order(cluster, "WaitingForPredecessor")] == ["Normal"]

    release(cluster, old_path)  # the garbage collector's part, done
    wait_for("a Job of its own", lambda: (j := cluster.job(NAME, "filter")) and uid(j) != uid(old))
    new = cluster.job(NAME, "filter")
    assert new is not None and controller_uid(new) == uid(body)
    command = " ".join(new["spec"]["template"]["spec"]["containers"][0]["command"])
    assert "second.jsonl" in command
    status = wait_for(
        "phase Filtering", lambda: (s := cluster.status(NAME)).get("phase") == "Filtering" and s
    )
    assert status["stages"]["filter"]["state"] == "Running"
    assert not status["stages"]["filter"].get("counts")  # the old pod's 12 were never read


def test_a_recreated_adaptation_steers_with_its_own_directive(
    cluster: EmulatedCluster, jobs: JobController, operator: OperatorRun
) -> None:
    """The predecessor's control ConfigMap (cycle 7 at LR 0.5) and Service are in the way of
    the train stage: deleted and waited for; the new ConfigMap holds cycle 0's directive."""
    cluster.leave_predecessor(NAME, stages=(), steered=True)
    configmap = cluster.path("v1", "configmaps", f"{NAME}-control")
    hold(cluster, configmap)

    body = cluster.apply_adaptation(NAME, make_spec(**ONLY_TRAINING))
    status = wait_for(
        "the wait for the predecessor", ready_reason(cluster, "WaitingForPredecessor")
    )
    message = condition(status, "Ready")["message"]
    assert "ConfigMap telephony-control" in message
    assert cluster.job(NAME, "train") is None

    release(cluster, configmap)
    train = jobs.wait_job(NAME, "train")
    assert controller_uid(train) == uid(body)
    for path in (configmap, cluster.path("v1", "services", f"{NAME}-train")):
        wait_for(
            f"{path}, ours",
            lambda p=path: (o := cluster.kube.get(p)) and controller_uid(o) == uid(body),
        )
    directive = cluster.directive(NAME)
    assert directive is not None and directive.cycle == 0
    assert 1e-7 <= directive.learning_rate <= 1e-5  # the spec's bounds, not the old 0.5


def test_a_409_on_a_predecessor_s_job_no_watch_showed_replaces_it(
    cluster: EmulatedCluster, jobs: JobController, operator: OperatorRun
) -> None:
    """A Job of the name, controlled by an earlier AsrAdaptation of the name but without the
    labels the watch selects: the create's 409 is checked, the Job deleted, ours created."""
    cluster.leave_predecessor(NAME, stages=("filter",), steered=False)
    path = cluster.path("batch/v1", "jobs", f"{NAME}-filter")
    old = cluster.kube.get(path)
    assert old is not None
    cluster.kube.merge_patch(path, {"metadata": {"labels": None}})  # unseen by the index
    body = cluster.apply_adaptation(NAME, make_spec())
    wait_for(
        "a filter Job of its own",
        lambda: (j := cluster.kube.get(path)) and controller_uid(j) == uid(body),
    )
    assert operator_calls(cluster, "DELETE", path) >= 1
    wait_for("phase Filtering", lambda: cluster.status(NAME).get("phase") == "Filtering")


def test_a_409_on_someone_else_s_object_fails_the_pass_and_leaves_it(
    cluster: EmulatedCluster, operator: OperatorRun
) -> None:
    """A Job of the name that a CronJob controls is no leftover of ours: never deleted, never
    counted as created; the pass fails with ChildNotOurs, naming its controller."""
    path = cluster.path("batch/v1", "jobs", f"{NAME}-filter")
    cluster.kube.create({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": f"{NAME}-filter", "namespace": NAMESPACE, "ownerReferences": [{
            "apiVersion": "batch/v1", "kind": "CronJob", "name": "nightly", "uid": "cron-1",
            "controller": True}]},
        "spec": {"template": {"spec": {"containers": []}}},
    })  # fmt: skip
    cluster.apply_adaptation(NAME, make_spec())
    reconciled = wait_for(
        "Reconciled False",
        lambda: (
            (s := cluster.status(NAME)).get("conditions")
            and [c for c in s["conditions"] if c["type"] == "Reconciled" and c["status"] == "False"]
        ),
    )[0]
    assert reconciled["reason"] == "ChildNotOurs"
    assert "CronJob nightly (uid cron-1)" in reconciled["message"]
    assert cluster.status(NAME).get("phase", "Pending") == "Pending"
    existing = cluster.kube.get(path)
    assert existing is not None and controller_uid(existing) == "cron-1"
    assert operator_calls(cluster, "DELETE", path) == 0


def test_a_409_on_its_own_objects_counts_as_created(
    cluster: EmulatedCluster, jobs: JobController, operator: OperatorRun
) -> None:
    """The train Job is refused after its ConfigMap and Service were created: the next
    passes meet both (409), find them ours, and go on; nothing is deleted."""
    cluster.refuse("jobs", f"{NAME}-train", 422, "Invalid", "not now")
    body = cluster.apply_adaptation(NAME, make_spec(**ONLY_TRAINING))
    service = cluster.path("v1", "services", f"{NAME}-train")
    wait_for("the Service", lambda: cluster.kube.get(service))
    wait_for("a second try", lambda: len(cluster.event_times("Warning", "ChildRefused")) >= 2)
    cluster.allow("jobs", f"{NAME}-train")
    train = jobs.wait_job(NAME, "train")
    assert controller_uid(train) == uid(body)
    assert not [c for c in list(cluster.calls) if c[0] == "DELETE" and c[3] == USER_AGENT]
    # The 409 was checked: the Service was read after the first create met it.
    assert operator_calls(cluster, "GET", service) >= 1


def test_a_failed_run_is_retried_once_per_token(
    cluster: EmulatedCluster, jobs: JobController, operator: OperatorRun
) -> None:
    """A Failed run, and the annotation set: the failed Job is deleted (held by a finalizer
    meanwhile: the run waits, Failed, Ready Retrying), then the stage starts again. The
    same token after a second failure retries nothing; a new one does."""
    adaptation = cluster.path("asr.marco.dev/v1alpha1", "asradaptations", NAME)
    cluster.apply_adaptation(NAME, make_spec())
    first = jobs.wait_job(NAME, "filter")
    jobs.fail(first, reason="BackoffLimitExceeded", message="limit", log_tail="boom")
    wait_for("phase Failed", lambda: cluster.status(NAME).get("phase") == "Failed")
    job_path = cluster.path("batch/v1", "jobs", f"{NAME}-filter")
    hold(cluster, job_path)

    cluster.kube.merge_patch(adaptation, {"metadata": {"annotations": {RETRY: "1"}}})
    status = wait_for("the wait for the failed Job", ready_reason(cluster, "Retrying"))
    assert status["phase"] == "Failed" and "retryToken" not in status
    assert "Job telephony-filter" in condition(status, "Ready")["message"]
    going = cluster.kube.get(job_path)
    assert going is not None and uid(going) == uid(first)
    assert going["metadata"].get("deletionTimestamp")

    release(cluster, job_path)
    second = wait_for(
        "a new filter Job",
        lambda: (j := cluster.job(NAME, "filter")) and uid(j) != uid(first) and j,
    )
    status = wait_for(
        "phase Filtering", lambda: (s := cluster.status(NAME)).get("phase") == "Filtering" and s
    )
    assert status["retryToken"] == "1"
    assert [e["type"] for e in events_in_order(cluster, "Retrying")] == ["Normal"]

    jobs.fail(second, reason="BackoffLimitExceeded", message="limit", log_tail="boom again")
    wait_for("phase Failed again", lambda: cluster.status(NAME).get("phase") == "Failed")
    wait_for(
        "no loop: settled",
        lambda: operator.metrics.registry.get_sample_value("marco_operator_reconcile_loops") == 0,
    )
    assert uid(cluster.job(NAME, "filter")) == uid(second)  # "1" is spent

    cluster.kube.merge_patch(adaptation, {"metadata": {"annotations": {RETRY: "2"}}})
    wait_for(
        "a third filter Job",
        lambda: (j := cluster.job(NAME, "filter")) and uid(j) not in (uid(first), uid(second)),
    )
    wait_for("token 2 recorded", lambda: cluster.status(NAME).get("retryToken") == "2")


def memory_of(job: dict[str, Any]) -> str:
    return job["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["memory"]


def test_a_scheduling_edit_after_the_start_applies_to_the_next_jobs(
    cluster: EmulatedCluster, jobs: JobController, operator: OperatorRun
) -> None:
    """The first Job marks the run started (generation 1). resources.memory, which a started
    run may change, edited to 48Gi: the next pass reflects generation 2; the running filter
    Job keeps its 32Gi (a Job's pods are not remade), the profile Job gets 48Gi."""
    adaptation = cluster.path("asr.marco.dev/v1alpha1", "asradaptations", NAME)
    cluster.apply_adaptation(NAME, make_spec(resources={"memory": "32Gi"}))
    status = wait_for(
        "the start recorded", lambda: (s := cluster.status(NAME)).get("startedGeneration") and s
    )
    assert (status["startedGeneration"], status["observedGeneration"]) == (1, 1)
    cluster.kube.merge_patch(adaptation, {"spec": {"resources": {"memory": "48Gi"}}})
    assert cluster.adaptation(NAME)["metadata"]["generation"] == 2
    status = wait_for(
        "generation 2 observed",
        lambda: (s := cluster.status(NAME)).get("observedGeneration") == 2 and s,
    )
    assert status["startedGeneration"] == 1
    filter_job = cluster.job(NAME, "filter")
    assert filter_job is not None and memory_of(filter_job) == "32Gi"
    jobs.complete(filter_job, StageResult(stage="filter"))
    assert memory_of(jobs.wait_job(NAME, "profile")) == "48Gi"
