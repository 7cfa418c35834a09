"""Kueue's admission against the kopf driver on kmock's emulator: the test plays Kueue.

Kueue's batch/Job integration holds a Job labelled kueue.x-k8s.io/queue-name while its
`spec.suspend` is true and admits it by setting it false (and may preempt it: true again).
The test does exactly that through the API, as Kueue's controller would, and plays the Job
controller (no pod for a suspended Job). The operator must create every stage Job suspended
and labelled, say Queued while it waits, and never touch `spec.suspend` itself.
"""

from __future__ import annotations

from typing import Any

import pytest

from marco_contract.formats import StageResult
from marco_operator.rbac import OPERATOR_RULES
from marco_operator.resources import QUEUE_LABEL

from .harness import (
    EmulatedCluster,
    JobController,
    OperatorRun,
    ScriptedTrainer,
    wait_for,
)
from .test_operator_kopf import (
    NAME,
    condition,
    events_in_order,
    make_spec,
    more_passes,
    phase_is,
)

pytestmark = pytest.mark.timeout(60)

QUEUE = "team-gpus"
#: Train then evaluate: the two stages a queue holds longest (GPUs).
TRAIN_AND_EVALUATE = {
    "filter": {"enabled": False},
    "profile": {"enabled": False},
    "augmentation": {"enabled": False},
    "baseline": {"enabled": False},
    "queueName": QUEUE,
}


def pods_of(cluster: EmulatedCluster, job: str) -> list[dict[str, Any]]:
    return cluster.kube.list(cluster.path("v1", "pods"), {"job-name": job}) or []


def queued_job(
    cluster: EmulatedCluster, jobs: JobController, stage: str, operator: OperatorRun
) -> dict[str, Any]:
    """The stage's Job, created suspended and labelled for the queue, left so by the
    operator while the status says Queued; no pod runs."""
    job = jobs.wait_job(NAME, stage)
    name = job["metadata"]["name"]
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"][QUEUE_LABEL] == QUEUE
    status = wait_for(
        f"phase Queued for {stage}",
        lambda: (
            (s := cluster.status(NAME)).get("phase") == "Queued"
            and s["stages"][stage]["state"] == "Pending"
            and s
        ),
    )
    assert (
        status["stages"][stage]["message"]
        == f"Job {name} waits for queue {QUEUE} (Kueue admits it)"
    )
    ready = condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "Queued")
    more_passes(operator)  # what it was going to do about it, done: still held, no pod
    assert cluster.job(NAME, stage)["spec"]["suspend"] is True
    assert pods_of(cluster, name) == []
    assert cluster.status(NAME)["phase"] == "Queued"
    return job


def test_kueue_admits_each_stage_job_the_operator_created_suspended(
    cluster: EmulatedCluster, jobs: JobController, trainer: ScriptedTrainer, operator
) -> None:
    cluster.apply_adaptation(NAME, make_spec(**TRAIN_AND_EVALUATE))

    train = queued_job(cluster, jobs, "train", operator)
    with pytest.raises(AssertionError, match="suspended: no pods"):
        jobs.start(train)  # the Job controller makes no pod for a suspended Job
    jobs.admit(train)  # Kueue: spec.suspend false
    jobs.start(train)
    status = wait_for("phase Training", phase_is(cluster, "Training"))
    assert status["stages"]["train"]["state"] == "Running"
    assert status["stages"]["train"].get("message") is None and status.get("message") is None
    wait_for("the first directive", lambda: cluster.directive(NAME))
    for wer in [30.0, 29.0, 28.0]:
        trainer.evaluate(wer)
    wait_for("cycle 1", lambda: (d := cluster.directive(NAME)) and d.cycle == 1)
    trainer.finished = True
    jobs.complete(train, StageResult(stage="train", wer=28.0, best_step=30, steps=30))

    evaluate = queued_job(cluster, jobs, "evaluate", operator)
    jobs.admit(evaluate)
    jobs.complete(evaluate, StageResult(stage="evaluate", wer=27.5))
    status = wait_for("phase Succeeded", phase_is(cluster, "Succeeded"))
    assert status["finalWer"] == 27.5

    queued = events_in_order(cluster, "Queued")
    assert [(e["type"], e["message"]) for e in queued] == [
        ("Normal", f"Job {NAME}-{stage} waits for queue {QUEUE} (Kueue admits it)")
        for stage in ("train", "evaluate")
    ]
    phases = [e["message"].split(":")[0] for e in events_in_order(cluster, "PhaseChanged")]
    assert phases == [
        "Pending → Queued",
        "Queued → Training",
        "Training → Queued",
        "Queued → Evaluating",
        "Evaluating → Succeeded",
    ]
    # Kueue's field is Kueue's: the operator never patched a Job (nor may it: RBAC).
    assert ("batch", "jobs", "patch") not in cluster.operator_rbac()
    assert all("patch" not in rule.verbs for rule in OPERATOR_RULES if rule.resource == "jobs")


def test_a_job_kueue_preempts_goes_back_to_queued_and_waits_for_kueue_again(
    cluster: EmulatedCluster, jobs: JobController, trainer: ScriptedTrainer, operator
) -> None:
    cluster.apply_adaptation(NAME, make_spec(**TRAIN_AND_EVALUATE))
    train = queued_job(cluster, jobs, "train", operator)
    jobs.admit(train)
    jobs.start(train)
    wait_for("phase Training", phase_is(cluster, "Training"))

    jobs.preempt(train)  # Kueue evicts it: suspended again, its pods gone
    train = queued_job(cluster, jobs, "train", operator)
    # Said once per Job: the Event the first wait made is the one (its name from its key).
    assert len(events_in_order(cluster, "Queued")) == 1

    jobs.admit(train)
    jobs.start(train, suffix="-again")
    status = wait_for("phase Training again", phase_is(cluster, "Training"))
    assert status["stages"]["train"].get("message") is None
