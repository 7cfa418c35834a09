"""The operator's side of issue 13, point 7, against kmock's API emulator: a spec whose
image or ServiceAccount the operator's allow-lists refuse gets an Event and a condition
and no Job; the history of rank 0 is read with the token of the Secret the pods mount."""

from __future__ import annotations

import pytest

from marco_operator.policy import Policy

from .harness import EmulatedCluster, JobController, OperatorRun, ScriptedTrainer, wait_for
from .test_operator_kopf import (
    NAME,
    ONLY_TRAINING,
    condition,
    events_in_order,
    loop_stopped,
    make_spec,
    phase_is,
    run_cycle,
    sample,
)

pytestmark = pytest.mark.timeout(60)

POLICY = Policy(images=("ghcr.io/marco-asr/trainer",), service_accounts=("marco-trainer",))


@pytest.fixture()
def guarded(cluster: EmulatedCluster, trainer: ScriptedTrainer):
    run = OperatorRun(cluster, trainer_port=trainer.port, policy=POLICY).start()
    yield run
    run.stop()


@pytest.mark.parametrize(
    ("resources", "field"),
    [({"image": "docker.io/evil/miner:latest"}, "spec.resources.image"),
     ({"serviceAccountName": "cluster-admin-sa"}, "spec.resources.serviceAccountName")],
)  # fmt: skip
def test_a_spec_the_allow_lists_refuse_gets_an_event_a_condition_and_no_job(
    cluster: EmulatedCluster, jobs: JobController, guarded: OperatorRun, resources, field
) -> None:
    cluster.apply_adaptation(NAME, make_spec(resources=resources))
    status = wait_for("phase Invalid", phase_is(cluster, "Invalid"))
    ready = condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "NotAllowed")
    assert ready["message"].startswith(field) and "not allowed by the operator" in ready["message"]
    loop_stopped(guarded)
    assert cluster.jobs(NAME) == []
    (event,) = events_in_order(cluster, "NotAllowed")
    assert event["type"] == "Warning" and event["message"].startswith(field)
    assert sample(guarded, "marco_operator_errors_total", kind="not-allowed") == 1

    # An allowed spec (a new generation) runs.
    allowed = {"image": "ghcr.io/marco-asr/trainer:0.2.0", "serviceAccountName": "marco-trainer"}
    cluster.kube.merge_patch(
        cluster.path("asr.marco.dev/v1alpha1", "asradaptations", NAME),
        {"spec": {"resources": allowed}},
    )
    job = jobs.wait_job(NAME, "filter")
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == allowed["image"]
    assert pod["serviceAccountName"] == "marco-trainer"


def test_the_history_is_read_with_the_token_of_the_secret_the_train_pods_mount(
    cluster: EmulatedCluster, jobs: JobController, trainer: ScriptedTrainer, operator
) -> None:
    """The scripted rank 0 answers 401 without the Secret's token: a cycle that the operator
    closes is one whose history it read with it."""
    cluster.apply_adaptation(NAME, make_spec(**ONLY_TRAINING))
    job = jobs.wait_job(NAME, "train")
    token = cluster.endpoint_token(NAME)
    assert token is not None and len(token) == 64
    pod = job["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "endpoint"]
    # Named for the adaptation's uid as well: a predecessor's is never mounted.
    uid = cluster.adaptation(NAME)["metadata"]["uid"].replace("-", "")
    assert volume["secret"]["secretName"] == f"{NAME}-endpoint-{uid[:12]}"
    secret = cluster.kube.get(cluster.path("v1", "secrets", f"{NAME}-endpoint-{uid[:12]}"))
    (owner,) = secret["metadata"]["ownerReferences"]
    assert owner["kind"] == "AsrAdaptation"
    jobs.start(job)
    wait_for("the first directive", lambda: cluster.directive(NAME))
    run_cycle(trainer, cluster, [30.0, 29.0, 28.5])
    assert trainer.requests > 0 and trainer.refused == 0
