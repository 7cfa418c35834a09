"""The API server fails the operator (issue 13's fault suite): `marco operator` against
kmock's emulator, which answers the operator's writes 409, 422, 500 or too late, and drops
its watches. Each fault lands on the pass that takes a cycle decision, and each test states
what must hold afterwards, computed from the scripted WERs, not read from the operator:
the directive of cycle 1 is Eq. 1 of cycle 0's WERs, said by one LearningRateChanged Event,
and the status holds each cycle once.

Every wait is on something the API server holds, with a timeout; no fixed sleeps.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import pytest

from marco_contract.formats import StageResult
from marco_operator import kube as kube_module
from tests.integration.operator.harness import (
    EmulatedCluster,
    Fault,
    JobController,
    OperatorProcess,
    OperatorRun,
    ScriptedTrainer,
    wait_for,
)
from tests.integration.operator.test_operator_kopf import (
    NAME,
    ONLY_TRAINING,
    eq1,
    events_in_order,
    make_spec,
    sample,
    status_at_cycle,
)

pytestmark = [pytest.mark.faults, pytest.mark.timeout(90)]

STATUS = f"/asradaptations/{NAME}/status"
CONTROL = f"/configmaps/{NAME}-control"
WERS = [30.0, 29.2, 29.9]  # cycle 0: three evaluations of 10 steps (make_spec)
CYCLE_1_LR = eq1(WERS, 1e-7, 1e-5, 0.5)
CLIENT_TIMEOUT = 1.0  # the operator's API client, in the timeout case


@dataclass
class ApiFault:
    path: str
    status: int | None
    reason: str
    said: str  # in the Warning Event's message
    delay: float = 0.0


API_FAULTS = {
    # Another writer changed the object: a conflict, transient.
    "status-409": ApiFault(STATUS, 409, "Conflict", "HTTP 409 Conflict: injected fault"),
    # The API server refuses the status once (a validating webhook, a schema check).
    "status-422": ApiFault(STATUS, 422, "Invalid", "HTTP 422 Invalid: injected fault"),
    # etcd did not answer in time.
    "status-500": ApiFault(STATUS, 500, "InternalError", "HTTP 500 InternalError"),
    # The answer comes after the client gave up, and the write lands all the same.
    "status-timeout": ApiFault(
        STATUS, None, "", "API server unreachable", delay=CLIENT_TIMEOUT + 0.5
    ),
    # The directive's write fails: nothing after it in the pass is applied.
    "directive-500": ApiFault(
        CONTROL,
        500,
        "InternalError",
        f"patching ConfigMap {NAME}-control: failed by the API server (HTTP 500 InternalError",
    ),
}


class ImpatientKube(kube_module.Kube):
    """The operator's client with a short timeout, so that a late answer is a timeout."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("timeout", CLIENT_TIMEOUT)
        super().__init__(*args, **kwargs)


def close_cycle_0_under(cluster: EmulatedCluster, trainer: ScriptedTrainer, fault: Fault) -> None:
    """Two evaluations go through; the fault is armed for the pass that sees the third."""
    for wer in WERS[:2]:
        trainer.evaluate(wer)
    # The pass that saw the second evaluation has written it: the next write is the decision's.
    wait_for("step 20 in the status", lambda: cluster.status(NAME).get("step") == 20)
    cluster.inject(fault)
    trainer.evaluate(WERS[2])


def assert_cycle_1_decided_once(cluster: EmulatedCluster) -> dict[str, Any]:
    """The outcome every fault here must leave: cycle 1 at Eq. 1 of cycle 0's WERs, in the
    ConfigMap and the status, said once."""
    directive = wait_for(
        "cycle 1's directive", lambda: (d := cluster.directive(NAME)) and d.cycle == 1 and d
    )
    assert directive.learning_rate == pytest.approx(CYCLE_1_LR, rel=1e-9)
    status = status_at_cycle(cluster, 1)
    assert [c["cycle"] for c in status["cycles"]] == [0, 1]
    assert status["cycles"][0]["wers"] == WERS
    assert status["cycles"][1]["learningRate"] == pytest.approx(CYCLE_1_LR, rel=1e-9)
    assert status["learningRate"] == pytest.approx(CYCLE_1_LR, rel=1e-9)
    changes = [e["message"] for e in events_in_order(cluster, "LearningRateChanged")]
    assert len(changes) == 1 and changes[0].startswith("cycle 1"), changes
    return status


@pytest.mark.parametrize("kind", list(API_FAULTS))
def test_a_failed_write_of_a_decision_is_redone_once(
    cluster: EmulatedCluster,
    jobs: JobController,
    trainer: ScriptedTrainer,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
) -> None:
    spec = API_FAULTS[kind]
    monkeypatch.setattr(kube_module, "Kube", ImpatientKube)
    run = OperatorRun(cluster, trainer.port).start()
    try:
        cluster.apply_adaptation(NAME, make_spec(**ONLY_TRAINING))
        jobs.start(jobs.wait_job(NAME, "train"))
        wait_for("cycle 0's directive", lambda: cluster.directive(NAME))
        fault = Fault("PATCH", spec.path, spec.status, spec.reason, delay=spec.delay)
        close_cycle_0_under(cluster, trainer, fault)

        assert_cycle_1_decided_once(cluster)
        assert fault.hits == 1
        # Said: a Warning naming the cause, then Recovered once a pass went through.
        (warning,) = events_in_order(cluster, "ApiError")
        assert warning["type"] == "Warning"
        assert spec.said in warning["message"], warning["message"]
        wait_for(
            "Recovered",
            lambda: [e["type"] for e in events_in_order(cluster, "Recovered")] == ["Normal"],
        )
        assert sample(run, "marco_operator_errors_total", kind="api") == 1
        wait_for(
            "the decision counted",
            lambda: sample(run, "marco_operator_decisions_total", reason="LearningRateChanged"),
        )
        assert sample(run, "marco_operator_decisions_total", reason="LearningRateChanged") == 1
    finally:
        run.stop()


def test_an_operator_killed_mid_pass_leaves_a_pass_the_next_one_finishes(
    cluster: EmulatedCluster, jobs: JobController, trainer: ScriptedTrainer, tmp_path
) -> None:
    """SIGKILL between the decision's directive and Event and its status write (held by the
    API server, then lost): the next operator redoes the pass; the Event is not said twice."""
    first = OperatorProcess(cluster, trainer.port, tmp_path).start()
    release = threading.Event()
    try:
        cluster.apply_adaptation(NAME, make_spec(**ONLY_TRAINING))
        jobs.start(jobs.wait_job(NAME, "train"))
        wait_for("cycle 0's directive", lambda: cluster.directive(NAME))
        held = Fault("PATCH", STATUS, 503, "ServiceUnavailable", release=release)
        close_cycle_0_under(cluster, trainer, held)
        assert held.reached.wait(30), "the decision's status write never came"
        # Everything before the commit point is out: the directive and the Event.
        assert cluster.directive(NAME).cycle == 1
        assert len(events_in_order(cluster, "LearningRateChanged")) == 1
        assert cluster.status(NAME).get("cycle") == 0
    finally:
        first.kill()
    release.set()  # answered 503 to a client that is gone: the write never lands

    second = OperatorProcess(cluster, trainer.port, tmp_path).start()
    try:
        assert_cycle_1_decided_once(cluster)
        assert held.hits == 1
        # The restarted operator took the decision again (its first pass) and counts it.
        wait_for(
            "the decision counted",
            lambda: second.metric("marco_operator_decisions_total",
                                  {"reason": "LearningRateChanged"}),
        )  # fmt: skip
    finally:
        second.stop()


def test_dropped_watches_lose_no_change(
    cluster: EmulatedCluster, jobs: JobController, trainer: ScriptedTrainer, operator: OperatorRun
) -> None:
    """The watches of Jobs, pods and adaptations end at the events that finish the filter
    stage, and their resumption is answered 410 Gone: the operator lists again and goes on."""
    spec = make_spec(**{**ONLY_TRAINING, "filter": {"enabled": True}})
    cluster.apply_adaptation(NAME, spec)
    job = jobs.wait_job(NAME, "filter")
    jobs.start(job)
    wait_for("phase Filtering", lambda: cluster.status(NAME).get("phase") == "Filtering")
    watches = len([c for c in list(cluster.calls) if c[2]])
    for plural in ("jobs", "pods", "asradaptations"):
        cluster.drop_watches(plural, events=1, expire=1)
    result = StageResult(stage="filter", counts={"kept": 7, "rejected": 2})
    jobs.complete(job, result)

    train = jobs.wait_job(NAME, "train")
    assert train["metadata"]["name"] == f"{NAME}-train"
    status = wait_for(
        "phase Training", lambda: (s := cluster.status(NAME)).get("phase") == "Training" and s
    )
    assert status["stages"]["filter"]["state"] == "Succeeded"
    assert status["stages"]["filter"]["counts"] == {"kept": 7, "rejected": 2}
    # The faults fired: each watch lost an event, and each resumption was sent back to list.
    assert cluster.watch_drops == {"jobs": 0, "pods": 0, "asradaptations": 0}
    wait_for(
        "every resumption answered 410",
        lambda: cluster.watch_expiries == {"jobs": 0, "pods": 0, "asradaptations": 0},
    )
    # Each watch ended, resumed (answered 410), listed and watched again: two more per kind.
    wait_for(
        "the watches started again",
        lambda: len([c for c in list(cluster.calls) if c[2]]) >= watches + 6,
    )
    # Nothing said twice for it.
    assert len(events_in_order(cluster, "StageSucceeded")) == 1
    assert len(events_in_order(cluster, "StageStarted")) == 2  # filter, train
    names = [j["metadata"]["name"] for j in cluster.jobs(NAME)]
    assert names == [f"{NAME}-filter", f"{NAME}-train"]
