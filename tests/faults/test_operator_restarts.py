"""The operator restarted in a loop during a run (issue 13's fault suite): `marco operator`
as a real process, SIGKILLed six times from the spec's creation to the run's end, at each
step of it (while a stage runs, while a cycle closes with no operator up, right after each
decision: the last one once committed, since its Job ends next). What must hold is
computed from the script: each stage's Job made once, each cycle's LR Eq. 1 of the cycle
before, each decision said once, the run Succeeded.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from marco_contract.formats import StageResult
from tests.integration.operator.harness import (
    EmulatedCluster,
    JobController,
    OperatorProcess,
    ScriptedTrainer,
    wait_for,
)
from tests.integration.operator.test_operator_kopf import (
    NAME,
    ONLY_TRAINING,
    eq1,
    events_in_order,
    make_spec,
)

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]

CYCLE_0 = [30.0, 29.2, 29.9]
CYCLE_1 = [29.0, 28.5, 28.9]


class Restarts:
    """One operator process at a time; each restart SIGKILLs the one before."""

    def __init__(self, cluster: EmulatedCluster, trainer: ScriptedTrainer, workdir: Path):
        self.cluster, self.trainer, self.workdir = cluster, trainer, workdir
        self.current: OperatorProcess | None = None
        self.kills = 0

    def start(self) -> OperatorProcess:
        assert self.current is None
        self.current = OperatorProcess(self.cluster, self.trainer.port, self.workdir).start()
        return self.current

    def kill(self) -> None:
        assert self.current is not None
        self.current.kill()
        self.current = None
        self.kills += 1


@pytest.fixture()
def restarts(
    cluster: EmulatedCluster, trainer: ScriptedTrainer, tmp_path: Path
) -> Iterator[Restarts]:
    loop = Restarts(cluster, trainer, tmp_path)
    yield loop
    if loop.current is not None:
        loop.current.stop()


def directive_of(cluster: EmulatedCluster, cycle: int):
    return wait_for(
        f"the directive of cycle {cycle}",
        lambda: (d := cluster.directive(NAME)) and d.cycle == cycle and d,
    )


def test_an_operator_killed_again_and_again_loses_and_repeats_nothing(
    cluster: EmulatedCluster, jobs: JobController, trainer: ScriptedTrainer, restarts: Restarts
) -> None:
    spec = make_spec(**{**ONLY_TRAINING, "filter": {"enabled": True}})
    restarts.start()
    cluster.apply_adaptation(NAME, spec)
    filter_job = jobs.wait_job(NAME, "filter")
    restarts.kill()  # 1: while the filter stage runs
    jobs.complete(filter_job, StageResult(stage="filter", counts={"kept": 7}))

    restarts.start()
    train_job = jobs.wait_job(NAME, "train")
    jobs.start(train_job)
    first = directive_of(cluster, 0)
    # Possibly before the pass's Events and status: the next pass, finding the train Job
    # that no committed status records, says its StageStarted (core._unsaid_start).
    restarts.kill()  # 2: as soon as cycle 0's LR is out
    for wer in CYCLE_0:  # cycle 0 closes while no operator runs
        trainer.evaluate(wer)

    restarts.start()
    directive_of(cluster, 1)
    restarts.kill()  # 3: right after the decision's directive, whatever the pass had left
    restarts.start()
    for wer in CYCLE_1[:2]:
        trainer.evaluate(wer)
    wait_for("step 50 in the status", lambda: cluster.status(NAME).get("step") == 50)
    restarts.kill()  # 4: mid-cycle
    trainer.evaluate(CYCLE_1[2])

    restarts.start()
    directive_of(cluster, 2)
    # Committed before the kill: the train Job ends next, and once it has, rank 0's history
    # (cycle 1's last WER) is read no more. A decision whose commit was lost there is
    # test_lost_commit.py's case, with the status write held and lost on purpose.
    wait_for("cycle 2 in the status", lambda: cluster.status(NAME).get("cycle") == 2)
    restarts.kill()  # 5: right after the second decision
    trainer.finished = True
    jobs.complete(train_job, StageResult(stage="train", wer=28.5, best_step=50, steps=60))

    restarts.start()
    status = wait_for(
        "phase Succeeded", lambda: (s := cluster.status(NAME)).get("phase") == "Succeeded" and s
    )
    restarts.kill()  # 6: after the end
    assert restarts.kills == 6

    # Each stage's Job was made once, and the control objects once.
    assert sorted(j["metadata"]["name"] for j in cluster.jobs(NAME)) == [
        f"{NAME}-filter",
        f"{NAME}-train",
    ]
    # The cycles: each LR from the cycle before (Eq. 1), each record once.
    lr_1, lr_2 = eq1(CYCLE_0, 1e-7, 1e-5, 0.5), eq1(CYCLE_1, 1e-7, 1e-5, 0.5)
    assert [c["cycle"] for c in status["cycles"]] == [0, 1, 2]
    assert [c["wers"] for c in status["cycles"][:2]] == [CYCLE_0, CYCLE_1]
    learning_rates = [c["learningRate"] for c in status["cycles"]]
    assert learning_rates == pytest.approx([first.learning_rate, lr_1, lr_2], rel=1e-9)
    assert cluster.directive(NAME).learning_rate == pytest.approx(lr_2, rel=1e-9)
    # The decisions (Events keyed by cycle) said once each, however many operators saw them.
    changes = [
        e["message"].split(" at ")[0] for e in events_in_order(cluster, "LearningRateChanged")
    ]
    assert changes == ["cycle 1", "cycle 2"]
    assert len(events_in_order(cluster, "LearningRateSet")) == 1
    # The results: the filter's counts, the train stage's WER, both stages done.
    assert status["stages"]["filter"]["counts"] == {"kept": 7}
    assert (status["stages"]["filter"]["state"], status["stages"]["train"]["state"]) == (
        "Succeeded",
        "Succeeded",
    )
    assert (status["bestWer"], status["bestStep"]) == (28.5, 50)
    # Other Events are said at least once (one whose pass died before its status write may
    # be said twice: apply()'s contract).
    assert len(events_in_order(cluster, "StageSucceeded")) >= 2
    # Keyed by its Job: once each, though a pass may have died before saying it.
    started = sorted(e["message"] for e in events_in_order(cluster, "StageStarted"))
    assert started == [f"created Job {NAME}-filter", f"created Job {NAME}-train"]
