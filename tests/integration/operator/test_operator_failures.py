"""Every failure speaks (issue 13): `marco operator` against kmock's API emulator, with each
kind of refusal the API server gives a child, and an exception in core.

For each: a Warning Event naming the cause and the condition Reconciled False appear at
the first failed pass; the passes back off (the harness's operator: 0.2 s doubling to
0.8 s), timed by the Events' creation in the emulator and counted by the operator's own
counters; fixing the spec (or lifting the refusal) brings Recovered and the stage on.
Nothing sleeps for a fixed time: every wait is on what the API server holds, with a timeout.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from .harness import (
    EmulatedCluster,
    JobController,
    OperatorRun,
    ScriptedTrainer,
    wait_for,
)
from .test_operator_kopf import NAME, ONLY_TRAINING, condition, events_in_order, make_spec, sample

pytestmark = pytest.mark.timeout(60)

ADAPTATIONS = "asr.marco.dev/v1alpha1"
FIRST, CAP = 0.2, 0.8  # the harness operator's backoff (OperatorRun's defaults)
FAILURES = 5  # watched per kind: waits of 0.2, 0.4, 0.8 and (capped) 0.8 s between them


def adaptation_path(cluster: EmulatedCluster) -> str:
    return cluster.path(ADAPTATIONS, "asradaptations", NAME)


def reconciled(cluster: EmulatedCluster) -> dict[str, Any] | None:
    found = [c for c in cluster.status(NAME).get("conditions") or [] if c["type"] == "Reconciled"]
    return found[0] if found else None


def warnings(cluster: EmulatedCluster, reason: str, count: int) -> list[float]:
    """Wait for `count` Warning Events of `reason`; when each was created."""
    return wait_for(
        f"{count} Warning {reason} Events",
        lambda: len(times := cluster.event_times("Warning", reason)) >= count and times[:count],
        timeout=20,
    )


def assert_said_at_once(cluster: EmulatedCluster, reason: str, times: list[float]) -> None:
    """The condition was written with the first Warning, before the first backoff ended."""
    written = cluster.condition_times("Reconciled", "False", reason)
    assert written, "no status write set Reconciled False"
    assert times[0] <= written[0] < min(times[1], times[0] + FIRST), (times, written)


def assert_backs_off(times: list[float]) -> None:
    """The gaps between failed passes: at least the backoff (0.2, 0.4, 0.8, 0.8 s: doubling,
    then capped), and not much more (a pass is quick; the machine may be busy)."""
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    expected = [min(CAP, FIRST * 2**i) for i in range(len(gaps))]
    for gap, least in zip(gaps, expected, strict=True):
        assert least * 0.95 <= gap <= least + 1.5, f"gaps {gaps}, backoff {expected}"


@dataclass
class Refusal:
    spec: dict[str, Any]
    reason: str  # the Event's and the condition's
    cause: list[str]  # in the Event's message
    fix: dict[str, Any] | None = None  # a spec patch that fixes it
    setup: Callable[[EmulatedCluster], None] | None = None
    lift: Callable[[EmulatedCluster], None] | None = None  # instead of a spec fix
    stage: str = "filter"


REFUSALS = {
    # A ResourceQuota the Job would exceed: 403 Forbidden, until an administrator raises
    # it. (The issue's own cases, a malformed quantity the API server cannot decode and a
    # mount path twice in the pod, are refused at admission now: see
    # test_what_the_api_server_would_refuse_a_job_for_is_invalid_at_once below.)
    "quota-403": Refusal(
        spec=make_spec(),
        reason="ChildRefused",
        cause=[
            "creating Job telephony-filter: refused by the API server (HTTP 403 Forbidden: ",
            "exceeded quota: compute",
        ],
        setup=lambda cluster: cluster.refuse(
            "jobs",
            "telephony-filter",
            403,
            "Forbidden",
            'jobs.batch "telephony-filter" is forbidden: exceeded quota: compute, requested: '
            "requests.memory=32Gi, used: requests.memory=100Gi, limited: requests.memory=128Gi",
        ),
        lift=lambda cluster: cluster.allow("jobs", "telephony-filter"),
    ),
    # An admission webhook (emulated) refuses the train stage's headless Service.
    "webhook-422": Refusal(
        spec=make_spec(**ONLY_TRAINING),
        reason="ChildRefused",
        cause=[
            "creating Service telephony-train: refused by the API server (HTTP 422 Invalid: ",
            'admission webhook "policy.example.com" denied the request: headless Services',
        ],
        setup=lambda cluster: cluster.refuse(
            "services",
            "telephony-train",
            422,
            "Invalid",
            'admission webhook "policy.example.com" denied the request: headless Services '
            "are not allowed in namespace asr",
        ),
        lift=lambda cluster: cluster.allow("services", "telephony-train"),
        stage="train",
    ),
}


@pytest.mark.parametrize("kind", list(REFUSALS))
def test_a_refused_child_speaks_backs_off_and_recovers(
    cluster: EmulatedCluster, jobs: JobController, trainer: ScriptedTrainer, kind: str
) -> None:
    refusal = REFUSALS[kind]
    if refusal.setup is not None:
        refusal.setup(cluster)
    run = OperatorRun(cluster, trainer.port).start()
    try:
        cluster.apply_adaptation(NAME, refusal.spec)
        (first,) = warnings(cluster, refusal.reason, 1)
        # Said at the first failure, before the first backoff ends: Event and condition.
        (event,) = events_in_order(cluster, refusal.reason)
        assert event["type"] == "Warning"
        for words in refusal.cause:
            assert words in event["message"], event["message"]
        seen = wait_for("the condition Reconciled", lambda: reconciled(cluster))
        assert (seen["status"], seen["reason"]) == ("False", refusal.reason)
        assert refusal.cause[0] in seen["message"]
        assert cluster.status(NAME)["phase"] == "Pending"

        times = warnings(cluster, refusal.reason, FAILURES)
        assert times[0] == first
        assert_said_at_once(cluster, refusal.reason, times)
        assert_backs_off(times)
        # Every pass so far failed (one Event each, one error each): none went through.
        assert sample(run, "marco_operator_reconciles_total", result="success") == 0
        failed = sample(run, "marco_operator_reconciles_total", result="error")
        events = len(cluster.event_times("Warning", refusal.reason))
        assert events <= failed <= events + 1
        assert sample(run, "marco_operator_errors_total", kind="refused") == failed
        assert cluster.job(NAME, refusal.stage) is None
        # From the third failure on, the wait is the cap.
        assert reconciled(cluster)["message"].endswith(f" times in a row; next try in {CAP:g} s)")

        if refusal.fix is not None:
            cluster.kube.merge_patch(adaptation_path(cluster), {"spec": refusal.fix})
        if refusal.lift is not None:
            refusal.lift(cluster)
        jobs.wait_job(NAME, refusal.stage)
        status = wait_for(
            "Reconciled True", lambda: (c := reconciled(cluster)) and c["status"] == "True" and c
        )
        assert status["reason"] == "Recovered"
        assert status["message"].startswith(f"passes go through again after {refusal.reason}: ")
        (recovered,) = events_in_order(cluster, "Recovered")
        assert recovered["type"] == "Normal"
        ready = condition(cluster.status(NAME), "Ready")
        assert ready["status"] == "False" and ready["reason"] != refusal.reason
    finally:
        run.stop()


# The specs that the API server refused only when the operator created a stage's
# Job, after earlier stages ran: now Invalid at once, the field named, no Job made.
INVALID_AT_ONCE = {
    "bad-quantity": ({"resources": {"memory": "lots"}}, "spec.resources.memory: must be a "
                     "positive Kubernetes quantity", {"resources": {"memory": "32Gi"}}),
    "duplicate-mount-path": (
        {"data": {"volumeClaim": "corpus", "mountPath": "/data"},
         "output": {"volumeClaim": "results", "mountPath": "/data"}},
        "data.mountPath and output.mountPath must differ", {"output": {"mountPath": "/output"}}),
    "output-over-the-cache": (
        {"output": {"mountPath": "/home/marco"}},
        "spec.output.mountPath: must not be, lie inside or contain a folder the trainer's pod "
        "needs", {"output": {"mountPath": "/output"}}),
}  # fmt: skip


@pytest.mark.parametrize("kind", list(INVALID_AT_ONCE))
def test_what_the_api_server_would_refuse_a_job_for_is_invalid_at_once(
    cluster: EmulatedCluster, jobs: JobController, trainer: ScriptedTrainer, kind: str
) -> None:
    spec_patch, words, fix = INVALID_AT_ONCE[kind]
    for claim in ("corpus", "results"):  # the duplicate-mount-path spec's own claims
        cluster.create_claim(claim, ("ReadWriteMany",))
    run = OperatorRun(cluster, trainer.port).start()
    try:
        cluster.apply_adaptation(NAME, make_spec(**spec_patch))
        status = wait_for("phase Invalid", lambda: cluster.status(NAME).get("phase") == "Invalid")
        ready = condition(cluster.status(NAME), "Ready")
        assert ready["reason"] == "InvalidSpec" and words in ready["message"], ready
        assert status and cluster.jobs(NAME) == []
        cluster.kube.merge_patch(adaptation_path(cluster), {"spec": fix})
        jobs.wait_job(NAME, "filter")
    finally:
        run.stop()


def test_an_exception_in_core_speaks_backs_off_and_recovers(
    cluster: EmulatedCluster,
    jobs: JobController,
    trainer: ScriptedTrainer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug in core (an exception out of the cycle decision) speaks, backs off and, once
    it is gone, lets the pass through.

    The issue's own case (bounds [1e-20, 1e-3], where Eq. 1 rounded to an LR of 0.0 that
    the Directive model refused on every pass) is refused at admission now, so the
    exception is injected: the operator runs in this process, and core's decision is
    replaced by one that raises until the test lifts it.
    """
    from marco_operator import core

    real_decide = core.decide
    broken = {"on": True}

    def decide(*args: Any, **kwargs: Any) -> Any:
        if broken["on"]:
            raise ZeroDivisionError("injected: the decision divided by zero")
        return real_decide(*args, **kwargs)

    monkeypatch.setattr(core, "decide", decide)
    spec = make_spec(training={"learningRate": {"min": 1e-7, "max": 1e-3}}, **ONLY_TRAINING)
    run = OperatorRun(cluster, trainer.port).start()
    try:
        cluster.apply_adaptation(NAME, spec)
        jobs.start(jobs.wait_job(NAME, "train"))
        for wer in [30.0, 28.0, 31.0]:  # σ ≈ 1.2 > σ_ref: Eq. 1 goes to η_min
            trainer.evaluate(wer)
        times = warnings(cluster, "ReconcileError", FAILURES)
        (event, *_) = events_in_order(cluster, "ReconcileError")
        assert event["message"].startswith("reconcile failed: "), event["message"]
        assert "injected: the decision divided by zero" in event["message"]
        assert "(failed once; next try in 0.2 s)" in event["message"]
        seen = reconciled(cluster)
        assert (seen["status"], seen["reason"]) == ("False", "ReconcileError")
        assert "injected: the decision divided by zero" in seen["message"]
        assert_said_at_once(cluster, "ReconcileError", times)
        assert_backs_off(times)
        # No pass goes through while it backs off: the failures are all the passes there are.
        successes = sample(run, "marco_operator_reconciles_total", result="success")
        failed = sample(run, "marco_operator_reconciles_total", result="error")
        assert failed == pytest.approx(len(cluster.event_times("Warning", "ReconcileError")), abs=1)
        assert sample(run, "marco_operator_errors_total", kind="internal") == failed
        directive = cluster.directive(NAME)
        assert directive is not None and directive.cycle == 0, "nothing of a failed pass applied"

        broken["on"] = False  # the next try, at most one capped backoff away, goes through
        directive = wait_for(
            "cycle 1's directive", lambda: (d := cluster.directive(NAME)) and d.cycle == 1 and d
        )
        assert directive.learning_rate == pytest.approx(1e-7)
        wait_for("Reconciled True", lambda: reconciled(cluster)["reason"] == "Recovered")
        # The driver counts a pass once it has returned, after its status write: wait for it.
        wait_for(
            "a successful pass counted",
            lambda: sample(run, "marco_operator_reconciles_total", result="success") > successes,
        )
        assert [e["type"] for e in events_in_order(cluster, "Recovered")] == ["Normal"]
    finally:
        run.stop()


def test_a_spec_edit_ends_the_backoff(
    cluster: EmulatedCluster, jobs: JobController, trainer: ScriptedTrainer
) -> None:
    """A minute's backoff after the first refusal; the fix is taken at once all the same."""
    cluster.refuse("jobs", "telephony-filter", 403, "Forbidden", "exceeded quota: compute")
    run = OperatorRun(cluster, trainer.port, retry_first=60.0, retry_cap=60.0).start()
    try:
        cluster.apply_adaptation(NAME, make_spec(resources={"memory": "64Gi"}))
        warnings(cluster, "ChildRefused", 1)
        assert (
            "next try in 60 s" in wait_for("the condition", lambda: reconciled(cluster))["message"]
        )
        # Until then, nothing: the operator's own status write and Event do not wake it.
        jobs_path = cluster.path("batch/v1", "jobs")
        posts = [c for c in list(cluster.calls) if c[:2] == ("POST", jobs_path)]
        assert len(posts) == 1
        # A smaller request fits the quota (the emulated refusal is lifted with it, which
        # by itself wakes nothing: the operator does not watch quotas).
        cluster.allow("jobs", "telephony-filter")
        fix = {"spec": {"resources": {"memory": "1Gi"}}}
        cluster.kube.merge_patch(adaptation_path(cluster), fix)
        jobs.wait_job(NAME, "filter", timeout=10)
        assert len(cluster.event_times("Warning", "ChildRefused")) == 1
    finally:
        run.stop()


def assert_filter_trouble_said(cluster, status: dict[str, Any], trouble: str) -> None:
    """The filter Job's trouble is in the Ready condition and in one PodTrouble Warning."""
    said = f"filter Job telephony-filter: {trouble}"
    assert condition(status, "Ready")["message"] == said
    (event,) = events_in_order(cluster, "PodTrouble")
    assert (event["type"], event["message"]) == ("Warning", said)


def test_pods_that_cannot_start_speak_and_the_deadline_fails_the_stage(
    cluster: EmulatedCluster, jobs: JobController, operator: OperatorRun
) -> None:
    """The kubelet cannot pull the image: the stage says so while it waits; the Job then runs
    past its deadline (the Job controller fails it and deletes its pods) and the stage fails
    saying which deadline, and what it waited for."""
    spec = make_spec(resources={"image": "ghcr.io/marco-asr/trainer:nope",
                                "stageDeadlineSeconds": {"filter": 120}})  # fmt: skip
    cluster.apply_adaptation(NAME, spec)
    job = jobs.wait_job(NAME, "filter")
    assert job["spec"]["activeDeadlineSeconds"] == 120
    assert cluster.job(NAME, "filter")["spec"]["backoffLimit"] == 2
    jobs.start(job)
    pod = cluster.path("v1", "pods", "telephony-filter-pod")
    back_off = 'Back-off pulling image "ghcr.io/marco-asr/trainer:nope"'
    cluster.kube.merge_patch(pod + "/status", {"status": {
        "phase": "Pending",
        "containerStatuses": [{"name": "trainer", "ready": False, "restartCount": 0,
                               "state": {"waiting": {"reason": "ImagePullBackOff",
                                                     "message": back_off}}}],
    }})  # fmt: skip
    trouble = f"pod telephony-filter-pod: ImagePullBackOff: {back_off}"
    status = wait_for(
        "the stage's message",
        lambda: (s := cluster.status(NAME))["stages"]["filter"].get("message") == trouble and s,
    )
    assert_filter_trouble_said(cluster, status, trouble)

    # Past activeDeadlineSeconds the Job controller (1.31+) marks the Job FailureTarget,
    # deletes its pods, then marks it Failed.
    job_status = cluster.path("batch/v1", "jobs", "telephony-filter") + "/status"
    deadline = {"reason": "DeadlineExceeded", "status": "True",
                "message": "Job was active longer than specified deadline"}  # fmt: skip
    failure_target = {"type": "FailureTarget", **deadline}
    cluster.kube.merge_patch(job_status, {"status": {"conditions": [failure_target]}})
    cluster.kube.request("DELETE", pod)
    cluster.kube.merge_patch(
        job_status,
        {"status": {"active": 0, "failed": 1,
                    "conditions": [failure_target, {"type": "Failed", **deadline}]}},
    )  # fmt: skip
    status = wait_for(
        "phase Failed", lambda: (s := cluster.status(NAME))["phase"] == "Failed" and s
    )
    assert status["message"] == (
        "filter Job telephony-filter failed: DeadlineExceeded: Job was active longer than "
        "specified deadline (its deadline, spec.resources.stageDeadlineSeconds.filter, is 120 s); "
        f"{trouble}"
    )
    assert status["stages"]["filter"]["message"] == status["message"].split(" failed: ")[1]
    # The words changed, no second Event.
    assert len(events_in_order(cluster, "PodTrouble")) == 1
    assert status["stages"]["filter"]["state"] == "Failed"


def test_a_job_whose_pods_cannot_be_created_says_why(
    cluster: EmulatedCluster, jobs: JobController, trainer: ScriptedTrainer
) -> None:
    """The API server refuses the stage's pod (its ServiceAccount does not exist), so the Job
    has no pod at all, only the Job controller's FailedCreate Event. Past the operator's
    bound without a pod (2 s here, 30 s by default) the stage says why, with one PodTrouble
    Warning; the deadline that fails the stage then names it too."""
    bound = 2.0
    run = OperatorRun(cluster, trainer.port, no_pod_seconds=bound).start()
    try:
        applied = time.monotonic()
        cluster.apply_adaptation(NAME, make_spec(resources={"serviceAccountName": "missing"}))
        job = jobs.wait_job(NAME, "filter")
        refused = (
            'Error creating: pods "telephony-filter-" is forbidden: error looking up service '
            'account asr/missing: serviceaccount "missing" not found'
        )
        cluster.job_event(job, "Warning", "FailedCreate", refused)
        trouble = f"no pod: FailedCreate: {refused}"

        def says_why() -> dict[str, Any] | None:
            # The Job is created before the pass's status lands: until then no stages.
            status = cluster.status(NAME)
            message = status.get("stages", {}).get("filter", {}).get("message")
            return status if message == trouble else None

        status = wait_for("the stage's message", says_why)
        # Not before the bound (less a second: creationTimestamp has whole seconds).
        assert time.monotonic() - applied >= bound - 1.0
        assert cluster.kube.list(cluster.path("v1", "pods")) == []
        assert status["phase"] == "Filtering"
        assert_filter_trouble_said(cluster, status, trouble)

        job_status = cluster.path("batch/v1", "jobs", "telephony-filter") + "/status"
        cluster.kube.merge_patch(job_status, {"status": {"active": 0, "conditions": [{
            "type": "Failed", "status": "True", "reason": "DeadlineExceeded",
            "message": "Job was active longer than specified deadline"}]}})  # fmt: skip
        status = wait_for(
            "phase Failed", lambda: (s := cluster.status(NAME))["phase"] == "Failed" and s
        )
        assert status["message"] == (
            "filter Job telephony-filter failed: DeadlineExceeded: Job was active longer than "
            "specified deadline (its deadline, spec.resources.stageDeadlineSeconds.filter, is "
            f"86400 s); {trouble}"
        )
        assert len(events_in_order(cluster, "PodTrouble")) == 1
    finally:
        run.stop()


def test_an_oom_killed_pod_is_named_in_the_failure(
    cluster: EmulatedCluster, jobs: JobController, operator: OperatorRun
) -> None:
    cluster.apply_adaptation(NAME, make_spec(**ONLY_TRAINING, resources={"memory": "2Gi"}))
    job = jobs.wait_job(NAME, "train")
    jobs.start(job)
    wait_for("the first directive", lambda: cluster.directive(NAME))
    for pod in cluster.kube.list(cluster.path("v1", "pods")):
        cluster.kube.merge_patch(
            cluster.path("v1", "pods", pod["metadata"]["name"]) + "/status",
            {"status": {"phase": "Failed", "containerStatuses": [{
                "name": "trainer", "ready": False, "restartCount": 0,
                "state": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}]}},
        )  # fmt: skip
    wait_for(
        "OOMKilled in the stage's message",
        lambda: "OOMKilled (exit code 137)" in (
            cluster.status(NAME)["stages"]["train"].get("message") or ""
        ),
    )  # fmt: skip
    cluster.kube.merge_patch(
        cluster.path("batch/v1", "jobs", job["metadata"]["name"]) + "/status",
        {"status": {"active": 0, "failed": 3, "conditions": [{
            "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
            "message": "Job has reached the specified backoff limit"}]}},
    )  # fmt: skip
    status = wait_for(
        "phase Failed", lambda: (s := cluster.status(NAME))["phase"] == "Failed" and s
    )
    assert status["message"] == (
        "train Job telephony-train failed: BackoffLimitExceeded: Job has reached the specified "
        "backoff limit; pod telephony-train-0: OOMKilled (exit code 137)"
    )
