"""A decision in force whose commit was lost, and a train Job that ended before the next pass
(issue 13's "nothing lost"): the operator writes a cycle's directive (its own ConfigMap),
then its status, the commit point. SIGKILLed between the two, with the status write held by
the API server and then lost, while the train Job ends (the trainer may have applied the
directive): the next operator finds the Job ended, never steers it again, and must still
record the decision from the directive it wrote, said once and counted.

What must hold is computed from the script (Eq. 1 of cycle 0's WERs), not read from the
operator. Every wait is on something the API server holds, with a timeout; no fixed sleeps.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from marco_contract.formats import StageResult
from tests.faults.test_api_faults import CYCLE_1_LR, STATUS, WERS, close_cycle_0_under
from tests.integration.operator.harness import (
    EmulatedCluster,
    Fault,
    JobController,
    OperatorProcess,
    ScriptedTrainer,
    wait_for,
)
from tests.integration.operator.test_operator_kopf import (
    NAME,
    ONLY_TRAINING,
    events_in_order,
    make_spec,
)

pytestmark = [pytest.mark.faults, pytest.mark.timeout(90)]

#: How the train Job ends while no operator runs, and the phase that leaves.
ENDINGS = {"complete": "Succeeded", "failed": "Failed"}


@pytest.mark.parametrize("ending", list(ENDINGS))
def test_a_decision_whose_status_write_was_lost_is_recorded_after_its_job_ended(
    cluster: EmulatedCluster,
    jobs: JobController,
    trainer: ScriptedTrainer,
    tmp_path: Path,
    ending: str,
) -> None:
    first = OperatorProcess(cluster, trainer.port, tmp_path).start()
    release = threading.Event()
    try:
        cluster.apply_adaptation(NAME, make_spec(**ONLY_TRAINING))
        train_job = jobs.wait_job(NAME, "train")
        jobs.start(train_job)
        wait_for("cycle 0's directive", lambda: cluster.directive(NAME))
        held = Fault("PATCH", STATUS, 503, "ServiceUnavailable", release=release)
        close_cycle_0_under(cluster, trainer, held)
        assert held.reached.wait(30), "the decision's status write never came"
        # The decision is in force (the trainer reads it); the status does not record it.
        assert cluster.directive(NAME).cycle == 1
        assert cluster.status(NAME).get("cycle") == 0
    finally:
        first.kill()
    release.set()  # answered 503 to a client that is gone: the write never lands
    # The train Job ends under cycle 1's directive before any operator looks again.
    trainer.finished = True
    if ending == "complete":
        jobs.complete(train_job, StageResult(stage="train", wer=29.2, best_step=20, steps=40))
    else:
        jobs.fail(train_job, "BackoffLimitExceeded", "Job has reached the backoff limit", "boom")

    second = OperatorProcess(cluster, trainer.port, tmp_path).start()
    try:
        status = wait_for(
            f"phase {ENDINGS[ending]}",
            lambda: (s := cluster.status(NAME)).get("phase") == ENDINGS[ending] and s,
        )
        assert held.hits == 1
        # The decision in force, recorded once: cycle 1 at Eq. 1 of cycle 0's WERs.
        assert cluster.directive(NAME).learning_rate == pytest.approx(CYCLE_1_LR, rel=1e-9)
        assert [c["cycle"] for c in status["cycles"]] == [0, 1]
        assert status["cycles"][1]["learningRate"] == pytest.approx(CYCLE_1_LR, rel=1e-9)
        assert status["cycles"][1]["reason"].startswith("Eq. 1 from cycle 0")
        assert (status["cycle"], status["learningRate"]) == (1, pytest.approx(CYCLE_1_LR))
        # Cycle 0's last WER was seen only by the pass whose status was lost, and rank 0's
        # history is not read once its Job ended: the record keeps what was committed.
        assert status["cycles"][0]["wers"] == WERS[:2]
        # Said once (the first operator's Event and the second's are one keyed object),
        # and counted by the operator that committed it.
        changes = [e["message"] for e in events_in_order(cluster, "LearningRateChanged")]
        assert len(changes) == 1 and changes[0].startswith("cycle 1"), changes
        wait_for(
            "the decision counted",
            lambda: second.metric("marco_operator_decisions_total",
                                  {"reason": "LearningRateChanged"}) == 1,
        )  # fmt: skip
    finally:
        second.stop()
