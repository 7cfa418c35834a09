"""Every failure speaks: the backoff, the failed pass's condition and Event, and recovery."""

from __future__ import annotations

import copy
import json
import subprocess
import time
from typing import Any

import pytest

from marco_contract.formats import Directive, StageResult
from marco_operator import local
from marco_operator.api import parse_spec
from marco_operator.core import (
    RECONCILED,
    Failure,
    JobState,
    Observed,
    Outcome,
    StageStart,
    failed_pass,
    reconcile,
    retry_delay,
)
from marco_operator.kube import KubeError
from marco_operator.local import LocalJob, LocalRun, run_until_done
from marco_operator.plan import StageCommand, enabled_stages, stage_command
from marco_operator.reconciler import (
    ChildError,
    _job_state,
    describe_failure,
    job_trouble,
    pod_trouble,
)
from marco_operator.resources import Owner, cluster_layout, stage_job


def _condition(status: dict[str, Any], type_: str = RECONCILED) -> dict[str, Any] | None:
    found = [c for c in status.get("conditions") or [] if c["type"] == type_]
    assert len(found) <= 1
    return found[0] if found else None


def _status_body(code: int, reason: str, message: str) -> str:
    return json.dumps(
        {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
         "message": message, "code": code}
    )  # fmt: skip


# --- the backoff ----------------------------------------------------------------------------


def test_the_backoff_starts_at_one_second_and_doubles_to_five_minutes() -> None:
    assert [retry_delay(n) for n in range(1, 11)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]
    assert retry_delay(10_000) == 300  # no overflow, however long it failed
    assert [retry_delay(n, first=0.25, cap=1.0) for n in (1, 2, 3, 4)] == [0.25, 0.5, 1.0, 1.0]
    with pytest.raises(ValueError, match="at least 1"):
        retry_delay(0)


# --- what the API server says, as a user reads it ------------------------------------------


def test_a_refusal_reads_the_api_server_s_status() -> None:
    message = 'Job.batch "a-filter" is invalid: spec...: Invalid value: "lots": quantities...'
    error = KubeError(
        "POST", "/apis/batch/v1/namespaces/n/jobs", 422, _status_body(422, "Invalid", message)
    )
    assert (error.status, error.reason, error.message, error.refused) == (
        422,
        "Invalid",
        message,
        True,
    )
    assert error.describe() == f"HTTP 422 Invalid: {message}"
    # Not a Status (a proxy's page): the HTTP phrase, and the body's start.
    gateway = KubeError("GET", "/x", 503, "<html>\n upstream   gone</html>")
    assert (gateway.reason, gateway.message, gateway.refused) == (
        "ServiceUnavailable", "<html> upstream gone</html>", False,
    )  # fmt: skip
    # A conflict or throttling is no refusal of the request itself.
    assert not KubeError("PATCH", "/x", 409, _status_body(409, "Conflict", "stale")).refused
    assert not KubeError("POST", "/x", 429, "").refused
    assert KubeError("POST", "/x", 400, "").refused
    assert KubeError("POST", "/x", 403, "").refused


def test_a_failed_pass_is_described_by_what_failed() -> None:
    refused = KubeError("POST", "/jobs", 422, _status_body(422, "Invalid", "bad quantity"))
    failure = describe_failure(ChildError("creating", "Job", "a-filter", refused))
    assert failure == Failure(
        "ChildRefused",
        "creating Job a-filter: refused by the API server (HTTP 422 Invalid: bad quantity)",
    )
    busy = KubeError("POST", "/jobs", 500, _status_body(500, "InternalError", "etcd timeout"))
    failure = describe_failure(ChildError("creating", "Job", "a-filter", busy))
    assert failure.reason == "ApiError"
    assert failure.message.startswith("creating Job a-filter: failed by the API server (HTTP 500")
    failure = describe_failure(KubeError("GET", "/cm", 503, ""))
    assert failure == Failure("ApiError", "GET /cm: HTTP 503 ServiceUnavailable: ")
    failure = describe_failure(ConnectionRefusedError(111, "Connection refused"))
    assert failure.reason == "ApiError" and "unreachable" in failure.message
    assert describe_failure(KeyError("phase")) == Failure(
        "ReconcileError", "reconcile failed: KeyError: 'phase'"
    )


def test_a_tiny_learning_rate_refused_by_the_directive_names_field_and_value() -> None:
    with pytest.raises(ValueError) as raised:
        Directive(cycle=1, learning_rate=0.0, reason="Eq. 1")
    failure = describe_failure(raised.value)
    assert failure.reason == "ReconcileError"
    assert failure.message == (
        "reconcile failed: Directive: learning_rate: Input should be greater than 0 (got 0.0)"
    )


# --- the condition and the Event; recovery -------------------------------------------------


def _body(status: dict[str, Any] | None = None) -> dict[str, Any]:
    spec = {
        # A model folder on the volume: nothing to fetch, filter is the first stage.
        "model": {"source": "/data/models/whisper-tiny"},
        "data": {"volumeClaim": "asr-data", "train": ["t.jsonl"], "validation": "v.jsonl",
                 "test": "x.jsonl", "targetAudio": "target"},
    }  # fmt: skip
    body = {
        "metadata": {"name": "a", "namespace": "n", "uid": "u", "generation": 1},
        "spec": spec,
    }
    if status is not None:
        body["status"] = status
    return body


def test_a_failed_pass_sets_reconciled_false_and_says_when_it_tries_again() -> None:
    before = {"phase": "Filtering", "stages": {"filter": {"state": "Running"}},
              "conditions": [{"type": "Ready", "status": "False", "reason": "Filtering",
                              "message": "filter running",
                              "lastTransitionTime": "1970-01-01T00:01:00Z"}]}  # fmt: skip
    failure = Failure("ChildRefused", "creating Job a-filter: refused (HTTP 422 Invalid: no)")
    status, event = failed_pass(before, failure, failures=3, retry_in=4.0, now=100.0)
    condition = _condition(status)
    assert condition is not None
    assert (condition["status"], condition["reason"]) == ("False", "ChildRefused")
    assert condition["message"] == (
        "creating Job a-filter: refused (HTTP 422 Invalid: no) (failed 3 times in a row; "
        "next try in 4 s)"
    )
    assert (event.type, event.reason, event.message) == (
        "Warning",
        "ChildRefused",
        condition["message"],
    )
    # Nothing else moves: the failed pass applied nothing.
    assert status["phase"] == "Filtering"
    assert _condition(status, "Ready")["message"] == "filter running"
    assert status["stages"]["filter"]["state"] == "Running"
    # A second failure keeps the transition time (still False), a new message.
    again, _ = failed_pass(status, failure, failures=1, retry_in=1.0, now=200.0)
    assert _condition(again)["lastTransitionTime"] == condition["lastTransitionTime"]
    assert _condition(again)["message"].endswith("(failed once; next try in 1 s)")
    # A long refusal is clipped to what an Event can hold.
    long, event = failed_pass({}, Failure("ApiError", "x" * 5000), 1, 1.0, 0.0)
    assert len(_condition(long)["message"]) == len(event.message) == 1024


def test_the_first_pass_that_goes_through_turns_reconciled_true_with_an_event() -> None:
    status, _ = failed_pass({}, Failure("ReconcileError", "reconcile failed: boom"), 2, 2.0, 10.0)
    outcome = reconcile(_body(status), Observed(now=20.0))
    condition = _condition(outcome.status)
    assert (condition["status"], condition["reason"]) == ("True", "Recovered")
    assert condition["message"].startswith("passes go through again after ReconcileError: ")
    recovered = [e for e in outcome.events if e.reason == "Recovered"]
    assert [e.type for e in recovered] == ["Normal"]
    assert outcome.start, "and the pass did its work: the filter starts"
    # Once True, it stays as it is: no second Recovered.
    later = reconcile(_body(outcome.status), Observed(now=30.0))
    assert _condition(later.status) == condition
    assert not [e for e in later.events if e.reason == "Recovered"]


def test_a_pass_that_never_failed_has_no_reconciled_condition() -> None:
    assert _condition(reconcile(_body(), Observed(now=1.0)).status) is None


# --- the local driver -----------------------------------------------------------------------


def test_marco_run_says_a_failing_pass_backs_off_and_recovers(tmp_path, monkeypatch) -> None:
    manifest = {"apiVersion": "asr.marco.dev/v1alpha1", "kind": "AsrAdaptation",
                "metadata": {"name": "a"}, "spec": _body()["spec"]}  # fmt: skip
    run = LocalRun(manifest=manifest, data_dir=tmp_path, output_dir=tmp_path / "out")
    real_reconcile = local.reconcile
    passes: list[str] = []

    def flaky(body: Any, observed: Observed, **options: Any) -> Outcome:
        passes.append("pass")
        if len(passes) <= 3:
            raise RuntimeError(f"boom {len(passes)}")
        outcome = real_reconcile(body, observed, **options)
        # Settle at once (an invalid phase ends run_until_done) without starting processes.
        outcome.start = []
        outcome.status = {**outcome.status, "phase": "Invalid"}
        return outcome

    sleeps: list[float] = []
    seen: list[Outcome] = []
    monkeypatch.setattr(local, "reconcile", flaky)
    monkeypatch.setattr(local.time, "sleep", sleeps.append)
    status = run_until_done(run, 0.5, on_step=lambda _, o: seen.append(copy.deepcopy(o)))

    assert sleeps == [1.0, 2.0, 4.0]  # the backoff, not the interval, after each failure
    failed = [o for o in seen if o.events and o.events[0].reason == "ReconcileError"]
    assert [o.events[0].message for o in failed] == [
        "reconcile failed: RuntimeError: boom 1 (failed once; next try in 1 s)",
        "reconcile failed: RuntimeError: boom 2 (failed 2 times in a row; next try in 2 s)",
        "reconcile failed: RuntimeError: boom 3 (failed 3 times in a row; next try in 4 s)",
    ]
    assert _condition(failed[-1].status)["status"] == "False"
    assert _condition(status)["reason"] == "Recovered"
    events = [json.loads(line) for line in run.events_path.read_text().splitlines()]
    assert [(e["type"], e["reason"]) for e in events][:3] == [("Warning", "ReconcileError")] * 3
    assert ("Normal", "Recovered") in [(e["type"], e["reason"]) for e in events]
    assert _condition(json.loads(run.status_path.read_text()))["reason"] == "Recovered"


# --- pods that wait, and what killed one --------------------------------------------------


def _pod(name: str = "a-filter-x1", **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"job-name": "a-filter"}}, "status": status}


def _container(state: dict[str, Any], last: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": "trainer", "state": state, "lastState": last or {}}


UNSCHEDULABLE = {
    "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
    "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes "
               "are available: 3 No preemption victims found for incoming pod.",
}  # fmt: skip


@pytest.mark.parametrize(
    ("pod", "expected"),
    [
        (_pod(phase="Pending", conditions=[UNSCHEDULABLE]),
         "pod a-filter-x1: Unschedulable: 0/3 nodes are available: 3 Insufficient "
         "nvidia.com/gpu. preemption: 0/3 nodes are available: 3 No preemption victims found "
         "for incoming pod."),
        (_pod(phase="Pending", conditions=[{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/1 nodes are available: pod has unbound immediate "
                       "PersistentVolumeClaims."}]),
         "pod a-filter-x1: Unschedulable: 0/1 nodes are available: pod has unbound immediate "
         "PersistentVolumeClaims."),
        (_pod(phase="Pending", containerStatuses=[_container({"waiting": {
            "reason": "ImagePullBackOff", "message": 'Back-off pulling image "nope:1"'}})]),
         'pod a-filter-x1: ImagePullBackOff: Back-off pulling image "nope:1"'),
        (_pod(phase="Pending", containerStatuses=[_container({"waiting": {
            "reason": "ErrImagePull",
            "message": 'rpc error: code = NotFound desc = failed to pull and unpack image '
                       '"docker.io/library/nope:1": not found'}})]),
         'pod a-filter-x1: ErrImagePull: rpc error: code = NotFound desc = failed to pull and '
         'unpack image "docker.io/library/nope:1": not found'),
        (_pod(phase="Pending", containerStatuses=[_container({"waiting": {
            "reason": "CreateContainerConfigError",
            "message": 'secret "hf-token" not found'}})]),
         'pod a-filter-x1: CreateContainerConfigError: secret "hf-token" not found'),
        (_pod(phase="Failed", containerStatuses=[_container({"terminated": {
            "reason": "OOMKilled", "exitCode": 137}})]),
         "pod a-filter-x1: OOMKilled (exit code 137)"),
        (_pod(phase="Running", containerStatuses=[_container(
            {"running": {}}, last={"terminated": {"reason": "OOMKilled", "exitCode": 137}})]),
         "pod a-filter-x1: OOMKilled (exit code 137)"),
        (_pod(phase="Failed", containerStatuses=[_container({"terminated": {
            "reason": "Error", "exitCode": 1,
            "message": "Traceback (most recent call last):\n ...\nOSError: disk full\n"}})]),
         "pod a-filter-x1: Error (exit code 1): OSError: disk full"),
        (_pod(phase="Failed", reason="Evicted",
              message="The node was low on resource: ephemeral-storage."),
         "pod a-filter-x1: Evicted: The node was low on resource: ephemeral-storage."),
    ],
    ids=["unschedulable", "unbound-claim", "image-backoff", "image-pull", "config", "oom",
         "oom-last-state", "error", "evicted"],
)  # fmt: skip
def test_a_pod_s_trouble_in_its_own_words(pod: dict[str, Any], expected: str) -> None:
    assert pod_trouble(pod) == expected


@pytest.mark.parametrize(
    "pod",
    [
        _pod(phase="Pending"),  # not looked at by the scheduler yet
        _pod(phase="Pending", conditions=[{"type": "PodScheduled", "status": "True"}],
             containerStatuses=[_container({"waiting": {"reason": "ContainerCreating"}})]),
        _pod(phase="Running", containerStatuses=[_container({"running": {}})]),
        _pod(phase="Succeeded", containerStatuses=[_container({"terminated": {
            "reason": "Completed", "exitCode": 0, "message": '{"stage": "filter"}'}})]),
    ],
    ids=["new", "creating", "running", "succeeded"],
)  # fmt: skip
def test_a_pod_on_its_normal_way_has_no_trouble(pod: dict[str, Any]) -> None:
    assert pod_trouble(pod) is None


def test_a_failed_stage_result_gives_the_container_s_last_words() -> None:
    result = StageResult(stage="filter", ok=False, message="kept no utterance: 12 too_long")
    terminated = {"reason": "Error", "exitCode": 1, "message": result.to_termination_message()}
    pod = _pod(containerStatuses=[_container({"terminated": terminated})])
    assert (
        pod_trouble(pod) == "pod a-filter-x1: Error (exit code 1): kept no utterance: 12 too_long"
    )


def test_a_job_s_trouble_is_its_first_troubled_pod_and_a_count() -> None:
    waiting = {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off"}}
    pods = [_pod(f"a-profile-{i}", containerStatuses=[_container(waiting)]) for i in (2, 0, 1)]
    assert job_trouble(pods) == "pod a-profile-0: ImagePullBackOff: Back-off (and 2 more pods)"
    assert job_trouble(pods[:2]) == "pod a-profile-0: ImagePullBackOff: Back-off (and 1 more pod)"
    assert job_trouble([_pod(phase="Running")]) is None
    job = {"metadata": {"name": "a-filter", "labels": {"asr.marco.dev/stage": "filter"}},
           "status": {"active": 1}}  # fmt: skip
    state = _job_state(job, [_pod(phase="Pending", conditions=[UNSCHEDULABLE])])
    assert state.trouble is not None and state.trouble.startswith("pod a-filter-x1: Unschedulable")
    done = {**job, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    assert _job_state(done, [_pod(phase="Pending", conditions=[UNSCHEDULABLE])]).trouble is None


def test_a_stage_s_trouble_goes_into_its_message_and_one_warning() -> None:
    first = reconcile(_body(), Observed(now=1.0))
    trouble = "pod a-filter-x1: ImagePullBackOff: Back-off pulling image"
    job = JobState(name="a-filter", stage="filter", trouble=trouble)
    second = reconcile(_body(first.status), Observed(jobs={"filter": job}, now=2.0))
    assert second.status["stages"]["filter"]["message"] == trouble
    ready = _condition(second.status, "Ready")
    assert (ready["reason"], ready["message"]) == ("Filtering", f"filter Job a-filter: {trouble}")
    assert [(e.type, e.reason, e.message) for e in second.events] == [
        ("Warning", "PodTrouble", f"filter Job a-filter: {trouble}")
    ]
    # Its words change (ErrImagePull, then back-off again): the status follows, no Event.
    pulling = JobState(name="a-filter", stage="filter", trouble="pod a-filter-x1: ErrImagePull")
    third = reconcile(_body(second.status), Observed(jobs={"filter": pulling}, now=3.0))
    assert third.status["stages"]["filter"]["message"] == "pod a-filter-x1: ErrImagePull"
    assert third.events == []
    # Running at last: the message clears, the condition says it runs.
    running = JobState(name="a-filter", stage="filter", active=1)
    fourth = reconcile(_body(third.status), Observed(jobs={"filter": running}, now=4.0))
    assert fourth.status["stages"]["filter"]["message"] is None
    assert _condition(fourth.status, "Ready")["message"] == "filter running"
    # An OOMKilled pod, its replacement then done (no result read): the trouble is over.
    killed = JobState(name="a-filter", stage="filter", active=1, trouble="pod x: OOMKilled")
    fifth = reconcile(_body(fourth.status), Observed(jobs={"filter": killed}, now=5.0))
    assert fifth.status["stages"]["filter"]["message"] == "pod x: OOMKilled"
    done = JobState(name="a-filter", stage="filter", complete=True)
    sixth = reconcile(_body(fifth.status), Observed(jobs={"filter": done}, now=6.0))
    assert sixth.status["stages"]["filter"]["state"] == "Succeeded"
    assert sixth.status["stages"]["filter"]["message"] is None


def test_a_job_whose_pods_are_gone_keeps_what_they_said() -> None:
    first = reconcile(_body(), Observed(now=1.0))
    trouble = "pod a-filter-x1: Unschedulable: 0/3 nodes are available"
    job = JobState(name="a-filter", stage="filter", trouble=trouble)
    second = reconcile(_body(first.status), Observed(jobs={"filter": job}, now=2.0))
    # The pod deleted (its Job past its deadline), no new one yet: the words stay.
    gone = JobState(name="a-filter", stage="filter")
    third = reconcile(_body(second.status), Observed(jobs={"filter": gone}, now=3.0))
    assert third.status["stages"]["filter"]["message"] == trouble
    assert third.events == []


def test_failure_target_is_read_as_the_job_s_failure() -> None:
    """Kubernetes 1.31+ marks a Job FailureTarget while it stops its pods, Failed after."""
    job = {
        "metadata": {"name": "a-filter", "labels": {"asr.marco.dev/stage": "filter"}},
        "status": {"active": 1, "conditions": [{
            "type": "FailureTarget", "status": "True", "reason": "DeadlineExceeded",
            "message": "Job was active longer than specified deadline"}]},
    }  # fmt: skip
    waiting = {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off"}}
    state = _job_state(job, [_pod(phase="Pending", containerStatuses=[_container(waiting)])])
    assert state.failed
    assert state.failure_reason == "DeadlineExceeded: Job was active longer than specified deadline"
    assert state.trouble == "pod a-filter-x1: ImagePullBackOff: Back-off"


# --- deadlines -----------------------------------------------------------------------------


def test_every_stage_job_has_a_deadline_from_the_spec() -> None:
    spec = parse_spec(_body()["spec"])
    assert spec.resources.stage_deadline_seconds.of("filter") == 86400
    assert spec.resources.stage_deadline_seconds.of("train") == 7 * 86400
    with pytest.raises(ValueError, match="no deadline for stage 'deploy'"):
        spec.resources.stage_deadline_seconds.of("deploy")
    tight = parse_spec({**_body()["spec"], "resources": {"stageDeadlineSeconds": {"train": 60}}})
    assert tight.resources.stage_deadline_seconds.train == 60
    assert tight.resources.stage_deadline_seconds.filter == 86400  # the others keep theirs
    layout = cluster_layout(tight, "a")
    owner = Owner(name="a", namespace="n", uid="u")
    for stage in enabled_stages(tight):
        command = stage_command(tight, stage, layout, name="a", family="auto", learning_rate=1e-6)
        job = stage_job(tight, owner, command)
        expected = 60 if stage == "train" else 86400
        assert job["spec"]["activeDeadlineSeconds"] == expected, stage
    started = reconcile(_body(), Observed(now=1.0)).start
    assert [(s.stage, s.deadline_seconds) for s in started] == [("filter", 86400)]


def test_a_job_past_its_deadline_fails_the_stage_saying_so() -> None:
    spec = {**_body()["spec"], "resources": {"stageDeadlineSeconds": {"filter": 600}}}
    body = {**_body(), "spec": spec}
    first = reconcile(body, Observed(now=1.0))
    trouble = "pod a-filter-x1: ImagePullBackOff: Back-off pulling image"
    waiting = JobState(name="a-filter", stage="filter", trouble=trouble)
    second = reconcile({**body, "status": first.status}, Observed(jobs={"filter": waiting}))
    # The Job controller deletes the pods of a Job past its deadline: the status remembers.
    expired = JobState(
        name="a-filter", stage="filter", failed=True,
        failure_reason="DeadlineExceeded: Job was active longer than specified deadline",
    )  # fmt: skip
    third = reconcile({**body, "status": second.status}, Observed(jobs={"filter": expired}))
    assert third.status["phase"] == "Failed"
    assert third.status["message"] == (
        "filter Job a-filter failed: DeadlineExceeded: Job was active longer than specified "
        "deadline (its deadline, spec.resources.stageDeadlineSeconds.filter, is 600 s); "
        f"{trouble}"
    )
    assert _condition(third.status, "Ready")["reason"] == "StageFailed"


def test_marco_run_stops_a_stage_process_past_its_deadline(tmp_path) -> None:
    start = StageStart(
        stage="filter", job_name="a-filter", command=StageCommand(stage="filter", args=[]),
        deadline_seconds=0,
    )  # fmt: skip
    job = LocalJob(start, tmp_path / "filter.log")
    job.process = subprocess.Popen(["sleep", "30"], start_new_session=True)
    job.spawned_at = time.monotonic()
    state = job.state(tmp_path)
    assert state.failed and state.failure_reason is not None
    assert state.failure_reason.startswith("DeadlineExceeded: ran longer than its deadline")
    assert job.process.poll() is not None, "the process is stopped"
    assert job.state(tmp_path).failed  # and stays failed
