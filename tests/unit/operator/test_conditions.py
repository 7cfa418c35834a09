"""The standard conditions (marco_operator.conditions): which hold in each phase, when their
lastTransitionTime moves, which generation they speak for, and what the model and the CRD
accept (metav1.Condition's rules)."""

from __future__ import annotations

import copy
from typing import get_args

import pytest
from pydantic import ValidationError

from marco_contract.status import AsrAdaptationStatus, Condition, Phase, StageStatus
from marco_operator.conditions import derive_conditions, set_condition
from marco_operator.core import Failure, JobState, failed_pass, retry_failed
from tests.crd_check import crd_schema, validate_against_crd
from tests.unit.operator.test_core import Cluster, body, run_to_training

T0 = 1_000_000.0  # 1970-01-12T13:46:40Z
T0_ISO = "1970-01-12T13:46:40Z"
T1 = T0 + 60
T1_ISO = "1970-01-12T13:47:40Z"

#: Phases in which a stage's Job runs; whatever phase is added later and is not listed in
#: WAITING or FINISHED below must read as one of these (test_every_phase_is_mapped).
IN_PROGRESS = {"Fetching", "Filtering", "Profiling", "Augmenting", "Baseline", "Trials",
               "Training", "Evaluating", "Pushing"}  # fmt: skip
WAITING = {"Pending", "Queued"}
FINISHED = {"Succeeded", "EarlyStopped", "Failed", "Invalid"}


def status_of(phase: str, ready_reason: str, message: str = "", **fields) -> AsrAdaptationStatus:
    """A status as a pass leaves it before the derivation: its phase and its Ready."""
    status = AsrAdaptationStatus(phase=phase, message=message or None, observed_generation=3,
                                 **fields)  # fmt: skip
    ready = "True" if phase == "Succeeded" else "False"
    set_condition(status, "Ready", ready, ready_reason, message or f"{phase} detail", T0)
    return status


def table(conditions: list[Condition]) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in conditions}


# (phase, Ready's reason as the pass sets it, stages) -> expected (status, reason) by type.
CASES = [
    ("Pending", "Retrying", {},
     {"Ready": ("False", "Retrying"), "Running": ("False", "Retrying"),
      "Succeeded": ("False", "Pending"), "Failed": ("False", "Pending"),
      "Queued": ("False", "Pending")}),
    ("Pending", "WaitingForPredecessor", {},
     {"Ready": ("False", "WaitingForPredecessor"),
      "Running": ("False", "WaitingForPredecessor"), "Succeeded": ("False", "Pending"),
      "Failed": ("False", "Pending"), "Queued": ("False", "Pending")}),
    ("Queued", "WaitingForAdmission", {},
     {"Ready": ("False", "WaitingForAdmission"), "Running": ("False", "WaitingForAdmission"),
      "Succeeded": ("False", "Queued"), "Failed": ("False", "Queued"),
      "Queued": ("True", "WaitingForAdmission")}),
    ("Training", "Training", {},
     {"Ready": ("False", "Training"), "Running": ("True", "Training"),
      "Succeeded": ("False", "Training"), "Failed": ("False", "Training"),
      "Queued": ("False", "Training")}),
    ("Succeeded", "Succeeded", {},
     {"Ready": ("True", "Succeeded"), "Running": ("False", "Succeeded"),
      "Succeeded": ("True", "Succeeded"), "Failed": ("False", "Succeeded"),
      "Queued": ("False", "Succeeded")}),
    ("Failed", "StageFailed", {"train": StageStatus(state="Failed")},
     {"Ready": ("False", "StageFailed"), "Running": ("False", "Failed"),
      "Succeeded": ("False", "StageFailed"), "Failed": ("True", "StageFailed"),
      "Queued": ("False", "Failed")}),
    ("Invalid", "InvalidSpec", {},
     {"Ready": ("False", "InvalidSpec"), "Running": ("False", "Invalid"),
      "Succeeded": ("False", "InvalidSpec"), "Failed": ("True", "InvalidSpec"),
      "Queued": ("False", "Invalid")}),
    ("Invalid", "NotAllowed", {},
     {"Ready": ("False", "NotAllowed"), "Running": ("False", "Invalid"),
      "Succeeded": ("False", "NotAllowed"), "Failed": ("True", "NotAllowed"),
      "Queued": ("False", "Invalid")}),
    # An enforced stop that left train Failed delivered no model: a failure.
    ("EarlyStopped", "StopNotHonoured", {"train": StageStatus(state="Failed")},
     {"Ready": ("False", "StopNotHonoured"), "Running": ("False", "EarlyStopped"),
      "Succeeded": ("False", "StopNotHonoured"), "Failed": ("True", "StopNotHonoured"),
      "Queued": ("False", "EarlyStopped")}),
    # One whose stages all finished (the best checkpoint exported and evaluated): a success.
    ("EarlyStopped", "EarlyStopped",
     {"train": StageStatus(state="Succeeded"), "evaluate": StageStatus(state="Succeeded")},
     {"Ready": ("False", "EarlyStopped"), "Running": ("False", "EarlyStopped"),
      "Succeeded": ("True", "EarlyStopped"), "Failed": ("False", "EarlyStopped"),
      "Queued": ("False", "EarlyStopped")}),
]  # fmt: skip


@pytest.mark.parametrize(("phase", "reason", "stages", "expected"), CASES)
def test_each_phase_gives_its_condition_set(phase, reason, stages, expected) -> None:
    status = status_of(phase, reason, stages=stages)
    conditions = derive_conditions(status, T0)
    assert table(conditions) == expected
    assert [c.type for c in conditions] == ["Ready", "Running", "Succeeded", "Failed", "Queued"]
    # Exactly one of them holds once the run is over, none while it waits.
    over = {"Succeeded", "Failed"} & {c.type for c in conditions if c.status == "True"}
    assert len(over) == (1 if phase in FINISHED else 0)


@pytest.mark.parametrize("phase", get_args(Phase))
def test_every_phase_is_mapped(phase: str) -> None:
    """Each phase of the Literal is a waiting, an in-progress or a finished one; the
    in-progress ones read Running=True, so a phase added later is never silently idle."""
    assert phase in IN_PROGRESS | WAITING | FINISHED, f"{phase}: say where it belongs"
    running = table(derive_conditions(status_of(phase, "SomeReason"), T0))["Running"][0]
    assert running == ("True" if phase in IN_PROGRESS else "False")


def test_a_phase_unknown_here_counts_as_in_progress() -> None:
    # A phase another part adds (say, Downloading) before this table knows it.
    status = AsrAdaptationStatus.model_construct(
        **{**AsrAdaptationStatus(observed_generation=1).__dict__, "phase": "Downloading"}
    )
    conditions = table(derive_conditions(status, T0))
    assert conditions["Running"] == ("True", "Downloading")
    assert conditions["Succeeded"] == ("False", "Downloading")


def test_the_running_message_is_what_the_pass_said() -> None:
    status = status_of("Training", "Training", message="")
    set_condition(status, "Ready", "False", "Training", "train Job x: Unschedulable", T0)
    running = next(c for c in derive_conditions(status, T0) if c.type == "Running")
    assert running.message == "train Job x: Unschedulable"


def test_failed_carries_the_failing_message() -> None:
    status = status_of("Failed", "StageFailed", message="train Job x failed: OOMKilled")
    failed = next(c for c in derive_conditions(status, T0) if c.type == "Failed")
    assert (failed.status, failed.reason) == ("True", "StageFailed")
    assert failed.message == "train Job x failed: OOMKilled"


def test_transition_time_moves_only_when_the_status_flips() -> None:
    status = status_of("Training", "Training")
    status.conditions = derive_conditions(status, T0)
    # A later pass, still training, other words: no condition flips, no time moves.
    later = copy.deepcopy(status)
    set_condition(later, "Ready", "False", "Training", "train Job x: ImagePullBackOff", T1)
    later.conditions = derive_conditions(later, T1)
    assert {c.type: c.last_transition_time for c in later.conditions} == dict.fromkeys(
        ["Ready", "Running", "Succeeded", "Failed", "Queued"], T0_ISO
    )
    # It succeeds: Ready, Running and Succeeded flip (their time moves); Failed and Queued
    # stay False (theirs stays), though their reason follows the phase.
    later.phase = "Succeeded"
    set_condition(later, "Ready", "True", "Succeeded", "final WER 20%", T1)
    done = derive_conditions(later, T1)
    times = {c.type: c.last_transition_time for c in done}
    assert times == {"Ready": T1_ISO, "Running": T1_ISO, "Succeeded": T1_ISO,
                     "Failed": T0_ISO, "Queued": T0_ISO}  # fmt: skip
    assert table(done)["Failed"] == ("False", "Succeeded")


def test_observed_generation_is_the_generation_the_pass_acted_on() -> None:
    status = status_of("Training", "Training")
    status.conditions = derive_conditions(status, T0)
    assert {c.observed_generation for c in status.conditions} == {3}
    status.observed_generation = 4  # the next pass read generation 4 (an allowed edit)
    conditions = derive_conditions(status, T1)
    assert {c.observed_generation for c in conditions} == {4}
    assert {c.last_transition_time for c in conditions} == {T0_ISO}


def test_derive_leaves_its_input_alone() -> None:
    status = status_of("Failed", "StageFailed")
    before = status.model_dump()
    derive_conditions(status, T1)
    assert status.model_dump() == before


def test_a_status_without_ready_gets_a_consistent_set() -> None:
    conditions = table(derive_conditions(AsrAdaptationStatus(phase="Succeeded"), T0))
    assert conditions["Ready"] == ("True", "Succeeded")
    assert conditions["Succeeded"] == ("True", "Succeeded")


# ------------------------------------------------------------------ through core.reconcile


def conditions_of(status: dict) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_a_reconciled_run_reports_running_then_succeeded() -> None:
    cluster = Cluster(body())
    cluster.step()
    assert conditions_of(cluster.obj["status"])["Running"] == ("True", "Filtering")
    run_to_training(cluster)
    cluster.finish("train", wer=24.0, best_step=100, steps=200)
    cluster.step()
    cluster.finish("evaluate", wer=25.0)
    cluster.step()
    status = cluster.obj["status"]
    assert status["phase"] == "Succeeded"
    assert conditions_of(status) == {
        "Ready": ("True", "Succeeded"), "Running": ("False", "Succeeded"),
        "Succeeded": ("True", "Succeeded"), "Failed": ("False", "Succeeded"),
        "Queued": ("False", "Succeeded"),
    }  # fmt: skip
    assert {c["observedGeneration"] for c in status["conditions"]} == {1}


def test_a_failed_stage_sets_failed_and_a_retry_clears_it() -> None:
    cluster = Cluster(body())
    run_to_training(cluster)
    job = cluster.jobs["train"]
    cluster.jobs["train"] = JobState(name=job.name, stage="train", failed=True,
                                     failure_reason="BackoffLimitExceeded")  # fmt: skip
    cluster.step()
    status = cluster.obj["status"]
    assert conditions_of(status)["Failed"] == ("True", "StageFailed")
    assert conditions_of(status)["Succeeded"] == ("False", "StageFailed")
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert "BackoffLimitExceeded" in failed["message"]
    retried = retry_failed(status, now=cluster.now + 5)
    assert conditions_of(retried.status)["Failed"] == ("False", "Pending")
    assert conditions_of(retried.status)["Running"] == ("False", "Retrying")


def test_a_failed_pass_keeps_the_derived_set_and_adds_reconciled() -> None:
    cluster = Cluster(body())
    run_to_training(cluster)
    before = conditions_of(cluster.obj["status"])
    status, _ = failed_pass(cluster.obj["status"], Failure("ApiError", "503"), 1, 1.0, T1)
    after = conditions_of(status)
    assert after.pop("Reconciled") == ("False", "ApiError")
    assert after == before


# ------------------------------------------------------------------ model and CRD


def condition(**overrides) -> dict:
    return {"type": "Ready", "status": "False", "reason": "Training", "message": "",
            "lastTransitionTime": T0_ISO, "observedGeneration": 1, **overrides}  # fmt: skip


BAD = [
    ("reason", "not camel case"),
    ("reason", "9Lives"),
    ("reason", "Trailing,"),
    ("reason", ""),
    ("reason", "A" * 1025),
    ("message", "x" * 32769),
    ("lastTransitionTime", "yesterday"),
    ("lastTransitionTime", "2026-01-02T15:04:05"),  # no offset
    ("lastTransitionTime", "2026-01-02T15:04Z"),  # no seconds
    ("lastTransitionTime", "2026-01-02 15:04:05Z"),  # no T
    ("type", "has space"),
    ("status", "Maybe"),
    ("observedGeneration", -1),
]


@pytest.mark.parametrize(("field", "value"), BAD)
def test_the_model_and_the_crd_refuse_what_metav1_condition_refuses(field, value) -> None:
    bad = condition(**{field: value})
    with pytest.raises(ValidationError):
        Condition.model_validate(bad)
    obj = {**body(), "status": {"phase": "Training", "conditions": [bad]}}
    assert any("conditions" in error for error in validate_against_crd(obj)), field


@pytest.mark.parametrize(
    "when", ["2026-01-02T15:04:05Z", "2026-01-02t15:04:05.25z", "2026-01-02T15:04:05+02:00"]
)
def test_rfc3339_times_are_accepted(when) -> None:
    assert Condition.model_validate(condition(lastTransitionTime=when)).last_transition_time == when
    obj = {
        **body(),
        "status": {"phase": "Training", "conditions": [condition(lastTransitionTime=when)]},
    }
    assert validate_against_crd(obj) == []


def test_last_transition_time_is_required_on_write() -> None:
    missing = condition()
    del missing["lastTransitionTime"]
    with pytest.raises(ValidationError, match="lastTransitionTime"):
        Condition.model_validate(missing)
    obj = {**body(), "status": {"phase": "Training", "conditions": [missing]}}
    assert validate_against_crd(obj) == ["status.conditions.0: 'lastTransitionTime' is a "
                                         "required property"]  # fmt: skip


def without_nulls(value):
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(item) for item in value]
    return value


def test_the_crd_accepts_the_derived_conditions_as_a_map_by_type() -> None:
    cluster = Cluster(body())
    cluster.step()
    # As the API server stores it: the drivers write the status as a merge patch, whose
    # nulls delete fields.
    obj = {**body(), "status": without_nulls(cluster.obj["status"])}
    assert validate_against_crd(obj) == []
    items = crd_schema()["properties"]["status"]["properties"]["conditions"]
    assert items["x-kubernetes-list-type"] == "map"
    assert items["x-kubernetes-list-map-keys"] == ["type"]
    assert "type" in items["items"]["required"]  # a map key must be required
