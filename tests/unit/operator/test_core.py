"""reconcile() driven step by step, the test playing the cluster."""

import copy
import uuid

import pytest

from marco_contract.formats import Directive, Evaluation, EvaluationHistory, StageResult
from marco_operator.core import (
    NO_QUEUES,
    Child,
    JobState,
    Observed,
    Queueing,
    reconcile,
    retry_failed,
)
from marco_operator.reconciler import children
from marco_operator.resources import QUEUE_LABEL, Owner


def body(spec_patch=None, name="demo"):
    # A model folder on the data volume: nothing to fetch, filter runs first (the fetch
    # stage of a hub id: test_fetch_plan.py).
    spec = {
        "model": {"source": "/data/models/whisper-small", "family": "encoder-decoder"},
        "data": {"volumeClaim": "asr-data", "train": ["train.jsonl"], "validation": "dev.jsonl",
                 "test": "test.jsonl", "targetAudio": "target/"},
        "training": {"cycleSteps": 100, "evalEvery": 50, "stopGracePeriodSeconds": 30,
                     "earlyStopping": {"patience": 4, "minImprovement": 0.5}},
    }  # fmt: skip
    for key, value in (spec_patch or {}).items():
        spec[key] = {**spec.get(key, {}), **value}
    return {
        "apiVersion": "asr.marco.dev/v1alpha1",
        "kind": "AsrAdaptation",
        "metadata": {"name": name, "namespace": "ns", "uid": "uid-1", "generation": 1},
        "spec": spec,
    }


class Cluster:
    """Just enough of a cluster: Jobs by stage, a ConfigMap directive, the trainer's history."""

    def __init__(self, obj, queueing=None):
        self.obj = obj
        self.queueing = queueing
        #: Jobs being deleted in the foreground: they stay until the test lets them go.
        self.deleting: list[str] = []
        self.jobs: dict[str, JobState] = {}
        self.trials: dict[int, JobState] = {}  # the trials stage's Jobs, by trial label
        self.created: list[dict] = []
        self.directive: Directive | None = None
        self.history: list[Evaluation] = []
        self.now = 1000.0
        self.events = []

    def step(self):
        observed = Observed(
            jobs=dict(self.jobs),
            trials=dict(self.trials),
            evaluations=EvaluationHistory(evaluations=self.history)
            if "train" in self.jobs
            else None,
            directive=self.directive,
            now=self.now,
        )
        outcome = reconcile(copy.deepcopy(self.obj), observed, queueing=self.queueing)
        self.obj["status"] = outcome.status
        for child in outcome.delete:
            stage = next((s for s, j in self.jobs.items() if j.name == child.name), None)
            if stage is not None and child.foreground:
                self.deleting.append(child.name)  # the Job stays while its pods terminate
            elif stage is not None:
                del self.jobs[stage]
        # The kopf driver's objects of what core starts: what a cluster would hold.
        for child in children(outcome, Owner.from_body(self.obj)):
            labels = child["metadata"]["labels"]
            # A Job created suspended (for Kueue) has no pod until it is admitted.
            suspended = child["kind"] == "Job" and child["spec"].get("suspend") is True
            held = {"suspended": suspended, "active": 0 if suspended else 1,
                    "queue": labels.get(QUEUE_LABEL)}  # fmt: skip
            if child["kind"] == "Job" and "asr.marco.dev/trial" in labels:
                index = int(labels["asr.marco.dev/trial"])
                assert index not in self.trials, f"second Job for trial {index}"
                self.trials[index] = JobState(
                    name=child["metadata"]["name"], stage="trials", trial=index, **held,
                    uid=str(uuid.uuid4()),
                )  # fmt: skip
            elif child["kind"] == "Job":
                stage = labels["asr.marco.dev/stage"]
                assert stage not in self.jobs, f"second Job for {stage}"
                self.jobs[stage] = JobState(
                    name=child["metadata"]["name"], stage=stage, **held, uid=str(uuid.uuid4())
                )
            self.created.append(child)
        if outcome.directive is not None:
            self.directive = outcome.directive
        self.events += outcome.events
        return outcome

    def admit(self, stage):
        """Kueue admits the stage's Job (sets spec.suspend false); the Job controller starts
        its pod."""
        job = self.jobs[stage]
        assert job.suspended, f"{stage} Job is not suspended"
        self.jobs[stage] = JobState(
            name=job.name, stage=stage, active=1, queue=job.queue, uid=job.uid
        )

    def preempt(self, stage):
        """Kueue evicts the running Job (suspends it again): its pods go."""
        job = self.jobs[stage]
        self.jobs[stage] = JobState(
            name=job.name, stage=stage, suspended=True, queue=job.queue, uid=job.uid
        )

    def collect(self, name):
        """The garbage collector: a Job deleted in the foreground is gone with its pods."""
        assert name in self.deleting, f"{name} was not deleted"
        stage = next(s for s, j in self.jobs.items() if j.name == name)
        del self.jobs[stage]

    def finish(self, stage, **result):
        self.jobs[stage] = JobState(
            name=self.jobs[stage].name, stage=stage, complete=True,
            result=StageResult(stage=stage, **result), uid=self.jobs[stage].uid,
        )  # fmt: skip

    def finish_trial(self, index, curve):
        best = min(curve, key=lambda point: (point[1], point[0]))
        self.trials[index] = JobState(
            name=self.trials[index].name, stage="trials", trial=index, complete=True,
            result=StageResult(stage="train", wer=best[1], best_step=best[0], curve=curve),
            uid=self.trials[index].uid,
        )  # fmt: skip

    def fail_trial(self, index, reason):
        self.trials[index] = JobState(
            name=self.trials[index].name, stage="trials", trial=index, failed=True,
            failure_reason=reason, uid=self.trials[index].uid,
        )  # fmt: skip

    def evaluate(self, wer):
        step = 50 * (len(self.history) + 1)
        d = self.directive
        self.history.append(
            Evaluation(step=step, cycle=d.cycle, lr=d.learning_rate, wer=wer, time=self.now)
        )

    @property
    def phase(self):
        return self.obj["status"]["phase"]


def run_to_training(cluster, baseline_wer=40.0, family=None):
    for stage, phase in [("filter", "Filtering"), ("profile", "Profiling"),
                         ("augment", "Augmenting"), ("baseline", "Baseline")]:  # fmt: skip
        cluster.step()
        assert cluster.phase == phase
        seen = (dict(cluster.jobs), len(cluster.created), len(cluster.events))
        cluster.step()  # a second look changes nothing
        assert (cluster.jobs, len(cluster.created), len(cluster.events)) == seen
        assert cluster.phase == phase
        extra = {"wer": baseline_wer, "family": family} if stage == "baseline" else {}
        cluster.finish(stage, counts={"processed": 3}, **extra)
    cluster.step()
    assert cluster.phase == "Training"


def test_full_run_succeeds_and_eq1_steers_each_cycle():
    cluster = Cluster(body())
    run_to_training(cluster)
    status = cluster.obj["status"]
    # whisper-small (12 decoder layers) starts at the geometric mean of [1e-7, 1e-5]: 1e-6.
    assert status["baselineWer"] == 40.0 and status["learningRate"] == pytest.approx(1e-6)
    # Eq. 1 by hand, η_min = 1e-7, η_max = 1e-5 (η_max − η_min = 9.9e-6), σ_ref = 0.5; two
    # evaluations a cycle (cycleSteps 100 / evalEvery 50), population σ = |a − b| / 2:
    #   [30.0, 29.0]: σ = 0.5, clip(0.5 / 0.5) = 1   → η = 1e-5 − 9.9e-6 · 1   = 1e-7
    #   [27.0, 27.2]: σ = 0.1, clip(0.1 / 0.5) = 0.2 → η = 1e-5 − 9.9e-6 · 0.2 = 8.02e-6
    #   [24.0, 26.0]: σ = 1.0, clip(1.0 / 0.5) = 1   → η = 1e-7
    expected = {(30.0, 29.0): 1e-7, (27.0, 27.2): 8.02e-6, (24.0, 26.0): 1e-7}
    for cycle_wers, lr in expected.items():
        for wer in cycle_wers:
            cluster.evaluate(wer)
            cluster.step()
        assert cluster.directive.learning_rate == pytest.approx(lr, rel=1e-9)
    status = cluster.obj["status"]
    assert [c["learningRate"] for c in status["cycles"]] == pytest.approx(
        [1e-6, 1e-7, 8.02e-6, 1e-7], rel=1e-9
    )
    assert status["cycles"][1]["sigmaWer"] == pytest.approx(0.1)
    assert status["bestWer"] == 24.0 and status["cycle"] == 3
    cluster.finish("train", wer=24.0, best_step=250, steps=300)
    cluster.step()
    assert cluster.phase == "Evaluating"
    cluster.finish("evaluate", wer=25.0)
    cluster.step()
    status = cluster.obj["status"]
    assert cluster.phase == "Succeeded" and status["finalWer"] == 25.0
    for stage in ("filter", "profile", "augment", "baseline", "train", "evaluate"):
        record = status["stages"][stage]
        assert record["startTime"] <= record["completionTime"], stage
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Succeeded")
    phases = [e.message for e in cluster.events if e.reason == "PhaseChanged"]
    assert phases[0].startswith("Pending → Filtering") and phases[-1].startswith(
        "Evaluating → Succ"
    )
    assert sum(e.reason == "LearningRateChanged" for e in cluster.events) == 3
    kinds = sorted(c["kind"] for c in cluster.created)
    assert kinds == ["ConfigMap"] + ["Job"] * 6 + ["Secret", "Service"]


def test_llm_trains_at_eq2_lr_from_the_baseline_wer():
    cluster = Cluster(body({"model": {"source": "/data/models/custom", "family": None}}))
    run_to_training(cluster, baseline_wer=62.0, family="llm")
    assert cluster.obj["status"]["family"] == "llm"
    # Eq. 2 by hand: η = 1e-6 + (1e-4 − 1e-6) · 62 / 100 = 1e-6 + 9.9e-5 · 0.62 = 6.238e-5.
    assert cluster.directive.learning_rate == pytest.approx(6.238e-5, rel=1e-9)
    train = next(c for c in cluster.created if c["metadata"]["name"] == "demo-train"
                 and c["kind"] == "Job")  # fmt: skip
    assert "--family llm" in train["spec"]["template"]["spec"]["containers"][0]["command"][-1]


def run_to_an_ignored_stop(cluster):
    """Training to a plateau that stops it; the trainer then ignores the stop."""
    run_to_training(cluster)
    for wer in [30.0, 30.1, 30.2, 30.0, 30.3]:
        cluster.evaluate(wer)
        cluster.step()
    assert cluster.directive.stop and "early stop" in cluster.directive.reason
    assert cluster.phase == "Training"


def test_an_ignored_stop_deletes_the_train_job_and_the_best_checkpoint_is_evaluated():
    cluster = Cluster(body())
    run_to_an_ignored_stop(cluster)
    cluster.now += 10
    assert cluster.step().delete == []  # still inside the grace period (30 s)
    cluster.now += 30
    uid = cluster.jobs["train"].uid
    outcome = cluster.step()
    # Deleted, pods first (foreground); never suspended: a suspended Job is Kueue's to resume.
    # The delete names the Job it saw (its uid), never a newer one of the same name.
    assert uid is not None
    assert outcome.delete == [Child("Job", "demo-train", foreground=True, uid=uid)]
    assert "suspend" not in vars(outcome)
    status = cluster.obj["status"]
    train = status["stages"]["train"]
    assert train["state"] == "Succeeded" and "stop enforced" in train["message"]
    assert "Job demo-train deleted" in train["message"]
    # The best of the history above: 30.0 at step 50 (the first of the two 30.0s).
    assert (status["bestWer"], status["bestStep"], train["wer"]) == (30.0, 50, 30.0)
    warnings = [e for e in cluster.events if e.reason == "StopNotHonoured"]
    assert [(e.type, e.key) for e in warnings] == [("Warning", "stop-enforced")]
    assert cluster.phase == "Training"  # not over: evaluate follows

    # Its pods terminate: evaluate waits (asking again for the delete, which is idempotent).
    outcome = cluster.step()
    assert outcome.start == [] and outcome.delete == [Child("Job", "demo-train", True, uid)]
    assert "waiting for the stopped train Job demo-train" in cluster.obj["status"]["message"]
    cluster.collect("demo-train")
    outcome = cluster.step()
    assert [s.stage for s in outcome.start] == ["evaluate"] and cluster.phase == "Evaluating"
    args = outcome.start[0].command.args
    out = "/output/marco-asr/demo/train"
    assert args[args.index("--export-checkpoint") + 1] == f"{out}/checkpoints/best"
    assert args[args.index("--model") + 1] == f"{out}/export"
    cluster.finish("evaluate", wer=29.0)
    cluster.step()
    status = cluster.obj["status"]
    assert cluster.phase == "Succeeded" and status["finalWer"] == 29.0
    assert status["stages"]["train"]["state"] == "Succeeded"
    assert sum(e.reason == "StopNotHonoured" for e in cluster.events) == 1
    assert not any("EarlyStopped" in e.message for e in cluster.events)


def test_an_enforced_stop_whose_job_is_gone_is_recorded_without_starting_train_again():
    """A pass deleted the train Job and died before its status: the next one finds no Job,
    the stop overdue, and records the enforced stop instead of starting train again."""
    cluster = Cluster(body())
    run_to_an_ignored_stop(cluster)
    before = copy.deepcopy(cluster.obj)
    cluster.now += 40
    cluster.step()  # deletes the Job (foreground); its status is lost below
    cluster.obj = before
    cluster.collect("demo-train")
    events = len(cluster.events)
    outcome = cluster.step()
    assert outcome.start == [] and outcome.delete == []
    train = cluster.obj["status"]["stages"]["train"]
    assert (
        train["state"] == "Succeeded" and "was gone before the trainer stopped" in train["message"]
    )
    assert [e.key for e in cluster.events[events:] if e.reason == "StopNotHonoured"] == [
        "stop-enforced"
    ]
    assert [s.stage for s in cluster.step().start] == ["evaluate"]


def test_an_enforced_stop_without_evaluation_ends_succeeded_with_the_checkpoint_kept():
    cluster = Cluster(body({"evaluation": {"enabled": False}}))
    run_to_an_ignored_stop(cluster)
    cluster.now += 40
    cluster.step()
    cluster.step()
    assert cluster.phase == "Succeeded"
    assert "stays in train/checkpoints/best" in cluster.obj["status"]["stages"]["train"]["message"]


QUEUE = "gpu-a100"


def test_with_a_queue_every_stage_job_is_created_suspended_and_labelled_and_waits_queued():
    cluster = Cluster(body())
    cluster.obj["spec"]["queueName"] = QUEUE
    stages = ["filter", "profile", "augment", "baseline", "train", "evaluate"]
    for stage in stages:
        events = len(cluster.events)
        outcome = cluster.step()
        jobs = [c for c in cluster.created if c["kind"] == "Job"]
        job = jobs[-1]
        assert job["metadata"]["name"] == f"demo-{stage}"
        assert job["spec"]["suspend"] is True
        assert job["metadata"]["labels"][QUEUE_LABEL] == QUEUE
        assert [s.queue for s in outcome.start] == [QUEUE]
        status = cluster.obj["status"]
        assert cluster.phase == "Queued", stage
        assert status["stages"][stage]["state"] == "Pending"
        expected = f"Job demo-{stage} waits for queue {QUEUE} (Kueue admits it)"
        assert status["stages"][stage]["message"] == expected == status["message"]
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "Queued")
        queued = [e for e in cluster.events[events:] if e.reason == "Queued"]
        assert [(e.type, e.key, e.message) for e in queued] == [
            ("Normal", f"queued-demo-{stage}", expected)
        ]
        # Another look while Kueue holds it: nothing started, unsuspended or said again.
        events = len(cluster.events)
        outcome = cluster.step()
        assert (outcome.start, outcome.delete) == ([], [])
        assert not any(e.reason == "Queued" for e in cluster.events[events:])
        assert cluster.phase == "Queued"
        cluster.admit(stage)
        cluster.step()
        status = cluster.obj["status"]
        assert status["stages"][stage]["state"] == "Running"
        assert status["stages"][stage]["message"] is None and status["message"] is None
        assert cluster.phase != "Queued"
        if stage == "train":
            for wer in [30.0, 29.0]:
                cluster.evaluate(wer)
                cluster.step()
        extra = {"wer": 40.0} if stage == "baseline" else {}
        cluster.finish(stage, counts={"processed": 3}, **extra)
    cluster.step()
    assert cluster.phase == "Succeeded"


def test_a_preempted_job_goes_back_to_queued_and_is_never_resumed_by_the_operator():
    cluster = Cluster(body(), queueing=Queueing(default_name=QUEUE))
    cluster.step()
    cluster.admit("filter")
    cluster.step()
    assert cluster.phase == "Filtering"
    cluster.preempt("filter")  # Kueue evicts it: suspended again
    outcome = cluster.step()
    assert cluster.phase == "Queued" and (outcome.start, outcome.delete) == ([], [])
    assert cluster.obj["status"]["stages"]["filter"]["message"].endswith(
        f"waits for queue {QUEUE} (Kueue admits it)"
    )
    # Said again under the same key: the same Event object, not a second one.
    assert {e.key for e in cluster.events if e.reason == "Queued"} == {"queued-demo-filter"}
    for _ in range(3):
        cluster.now += 3600
        outcome = cluster.step()
        assert cluster.jobs["filter"].suspended and cluster.phase == "Queued"
        assert (outcome.start, outcome.delete) == ([], [])


def test_the_spec_queue_wins_over_the_operator_default_and_no_queue_changes_nothing():
    def first_job(spec_queue, queueing):
        obj = body()
        if spec_queue is not None:
            obj["spec"]["queueName"] = spec_queue
        cluster = Cluster(obj, queueing=queueing)
        cluster.step()
        return cluster.created[-1], cluster.phase

    job, phase = first_job("team-b", Queueing(default_name="team-a"))
    assert job["metadata"]["labels"][QUEUE_LABEL] == "team-b" and phase == "Queued"
    job, phase = first_job(None, Queueing(default_name="team-a"))
    assert job["metadata"]["labels"][QUEUE_LABEL] == "team-a" and phase == "Queued"
    for queueing in (None, Queueing(), NO_QUEUES):
        job, phase = first_job(None, queueing)
        assert QUEUE_LABEL not in job["metadata"]["labels"] and "suspend" not in job["spec"]
        assert phase == "Filtering"
    # The local driver has no Kueue: its jobs start at once whatever the spec says.
    job, phase = first_job("team-b", NO_QUEUES)
    assert QUEUE_LABEL not in job["metadata"]["labels"] and "suspend" not in job["spec"]
    assert phase == "Filtering"


def test_queued_trials_make_the_run_queued_until_one_is_admitted():
    obj = body({"trials": {"enabled": True, "steps": 20, "evalEvery": 10, "count": 2}})
    cluster = Cluster(obj, queueing=Queueing(default_name=QUEUE))
    run_to_trials = ["filter", "profile", "augment", "baseline"]
    for stage in run_to_trials:
        cluster.step()
        cluster.admit(stage)
        extra = {"wer": 40.0} if stage == "baseline" else {}
        cluster.finish(stage, **extra)
    cluster.step()
    assert len(cluster.trials) == 2
    assert all(t.suspended and t.queue == QUEUE for t in cluster.trials.values())
    assert cluster.phase == "Queued"
    keys = sorted(e.key for e in cluster.events if e.reason == "Queued" and "trials" in e.key)
    assert keys == ["queued-demo-trials-0", "queued-demo-trials-1"]
    trial = cluster.trials[0]
    cluster.trials[0] = JobState(name=trial.name, stage="trials", trial=0, active=1)
    cluster.step()
    assert cluster.phase == "Trials"
    records = cluster.obj["status"]["trials"]
    assert records[0]["state"] == "Running" and records[0]["message"] is None
    assert records[1]["state"] == "Pending" and "waits for queue" in records[1]["message"]


def test_failed_job_fails_the_adaptation_with_its_reason():
    cluster = Cluster(body())
    cluster.step()
    cluster.jobs["filter"] = JobState(
        name="demo-filter", stage="filter", failed=True,
        failure_reason="BackoffLimitExceeded: Job has reached the specified backoff limit",
    )  # fmt: skip
    cluster.step()
    status = cluster.obj["status"]
    assert cluster.phase == "Failed" and "BackoffLimitExceeded" in status["message"]
    assert status["stages"]["filter"]["state"] == "Failed"


def test_a_retried_failed_run_starts_again_at_the_failed_stage_only():
    cluster = Cluster(body())
    run_to_training(cluster)
    cluster.jobs["train"] = JobState(
        name="demo-train", stage="train", failed=True, failure_reason="exit code 1: OOM"
    )
    cluster.step()
    assert cluster.phase == "Failed"
    assert cluster.step().start == []  # Failed stays Failed: nothing starts by itself
    lr = cluster.obj["status"]["learningRate"]

    outcome = retry_failed(cluster.obj["status"], now=2000.0)

    assert outcome.status["phase"] == "Pending" and outcome.status["message"] is None
    assert outcome.status["stages"]["train"]["state"] == "Pending"
    assert outcome.status["stages"]["filter"]["state"] == "Succeeded"
    assert [e.reason for e in outcome.events] == ["Retrying"]
    assert "train Job demo-train failed: exit code 1: OOM" in outcome.events[0].message
    cluster.obj["status"] = outcome.status
    del cluster.jobs["train"]  # the failed Job is gone (locally: a new driver has none)
    started = cluster.step().start
    assert [s.stage for s in started] == ["train"] and cluster.phase == "Training"
    # The same cycle and LR: the trainer resumes from its checkpoint under the directive.
    assert cluster.obj["status"]["learningRate"] == lr
    assert len(cluster.obj["status"]["cycles"]) == 1


def test_a_retry_resets_the_failed_trials_of_a_failed_trials_stage():
    cluster = Cluster(body(TRIALS_ON))
    run_to_trials(cluster)
    for index in range(3):
        cluster.fail_trial(index, "exit code 1")
    cluster.step()
    assert cluster.phase == "Failed"

    status = retry_failed(cluster.obj["status"], now=2000.0).status

    assert status["stages"]["trials"]["state"] == "Pending"
    assert [t["state"] for t in status["trials"]] == ["Pending"] * 3
    assert all(t["message"] is None for t in status["trials"])
    cluster.obj["status"] = status
    cluster.trials = {}
    assert sorted(s.job_name for s in cluster.step().start) == [
        "demo-trials-0", "demo-trials-1", "demo-trials-2"]  # fmt: skip


def test_a_retry_leaves_a_run_that_did_not_fail_as_it_is():
    cluster = Cluster(body())
    run_to_training(cluster)
    outcome = retry_failed(cluster.obj["status"], now=2000.0)
    assert outcome.status == cluster.obj["status"] and outcome.events == []


def test_invalid_spec_is_refused_with_the_field_named():
    cluster = Cluster(body({"training": {"learningRate": {"min": 1e-4, "max": 1e-6}}}))
    outcome = cluster.step()
    status = cluster.obj["status"]
    assert cluster.phase == "Invalid" and outcome.start == []
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "InvalidSpec"
    assert ready["message"].startswith("spec.training.learningRate:")
    assert [e.reason for e in outcome.events] == ["InvalidSpec", "PhaseChanged"]
    assert cluster.step().events == []  # said once, not on every look


def test_restart_between_directive_and_status_write_repairs_instead_of_redeciding():
    cluster = Cluster(body())
    run_to_training(cluster)
    cluster.evaluate(30.0)
    cluster.evaluate(28.0)
    saved_status = copy.deepcopy(cluster.obj["status"])
    first = cluster.step()  # decides cycle 1 ...
    decided = cluster.directive
    cluster.obj["status"] = saved_status  # ... but the status write was lost
    outcome = cluster.step()
    assert cluster.directive == decided
    assert [c["cycle"] for c in cluster.obj["status"]["cycles"]] == [0, 1]
    # Not decided again: said again, as the same Event (its key names it), in case the
    # first one did not land.
    (said,) = [e for e in first.events if e.reason == "LearningRateChanged"]
    (again,) = [e for e in outcome.events if e.reason == "LearningRateChanged"]
    assert (again.key, again.message) == (said.key, said.message) == ("cycle-1", said.message)
    assert not [e for e in cluster.step().events if e.reason == "LearningRateChanged"]


@pytest.mark.parametrize("ending", ["complete", "failed", "vanished"])
def test_a_decision_in_force_whose_status_was_lost_is_recorded_whatever_the_job(ending):
    """The directive is the operator's own write, made before the status: a pass that died
    between the two leaves a decision the trainer may have applied. A Job that ended (or
    vanished) before the next pass is never steered again; the decision is recorded all the
    same, from the directive, and said once."""
    cluster = Cluster(body({"evaluation": {"enabled": False}}))
    run_to_training(cluster)
    cluster.evaluate(30.0)
    saved_status = copy.deepcopy(cluster.obj["status"])
    cluster.evaluate(28.0)
    first = cluster.step()  # decides cycle 1 ...
    decided = cluster.directive
    assert decided.cycle == 1
    cluster.obj["status"] = saved_status  # ... but the status write was lost
    if ending == "complete":
        cluster.finish("train", wer=28.0, best_step=100, steps=100)
    elif ending == "failed":
        cluster.jobs["train"] = JobState(
            name="demo-train", stage="train", failed=True, failure_reason="BackoffLimitExceeded"
        )
    else:
        del cluster.jobs["train"]
    outcome = cluster.step()
    status = cluster.obj["status"]
    assert cluster.directive == decided
    assert [c["cycle"] for c in status["cycles"]] == [0, 1]
    assert (status["cycle"], status["learningRate"]) == (1, decided.learning_rate)
    assert status["cycles"][1]["reason"] == decided.reason
    phases = {"complete": "Succeeded", "failed": "Failed", "vanished": "Training"}
    assert cluster.phase == phases[ending]
    (said,) = [e for e in first.events if e.reason == "LearningRateChanged"]
    (again,) = [e for e in outcome.events if e.reason == "LearningRateChanged"]
    assert (again.key, again.message) == (said.key, said.message)
    if ending == "vanished":
        assert outcome.directive == decided and outcome.start[0].stage == "train"
    assert not [e for e in cluster.step().events if e.reason == "LearningRateChanged"]


def test_a_closed_cycle_no_committed_status_recorded_is_rebuilt_from_the_history():
    """Two commits lost in a row: the train Job's start (cycle 0) and cycle 1's decision.
    The next pass finds cycle 1's directive and a status without cycles: cycle 0 is in
    rank 0's history, measured at its LR, and is recorded from it, not dropped."""
    cluster = Cluster(body())
    run_to_training(cluster)
    # The train start's status write was lost ...
    lost = {**copy.deepcopy(cluster.obj["status"]), "cycles": [], "cycle": None}
    first_lr = cluster.directive.learning_rate
    cluster.evaluate(30.0)
    cluster.evaluate(28.0)
    cluster.step()  # ... and so was cycle 1's decision's
    assert cluster.directive.cycle == 1
    cluster.obj["status"] = lost
    cluster.step()
    cycles = cluster.obj["status"]["cycles"]
    assert [c["cycle"] for c in cycles] == [0, 1]
    assert cycles[0]["learningRate"] == first_lr and cycles[0]["wers"] == [30.0, 28.0]
    assert cycles[0]["sigmaWer"] == pytest.approx(1.0)


def test_a_stop_in_force_whose_status_was_lost_is_recorded_after_the_job_completed():
    cluster = Cluster(body({"evaluation": {"enabled": False}}))
    run_to_training(cluster)
    for wer in [30.0, 30.1, 30.2, 30.0]:
        cluster.evaluate(wer)
        cluster.step()
    saved_status = copy.deepcopy(cluster.obj["status"])
    cluster.evaluate(30.3)
    first = cluster.step()  # decides the stop ...
    assert cluster.directive.stop
    cluster.obj["status"] = saved_status  # ... but the status write was lost
    cluster.finish("train", wer=30.0, best_step=50, steps=250)
    outcome = cluster.step()
    status = cluster.obj["status"]
    assert cluster.phase == "Succeeded"
    assert status["stop"]["reason"] == cluster.directive.reason
    (said,) = [e for e in first.events if e.reason == "EarlyStop"]
    (again,) = [e for e in outcome.events if e.reason == "EarlyStop"]
    assert (again.key, again.message) == (said.key, said.message) == ("stop", said.message)
    assert not [e for e in cluster.step().events if e.reason == "EarlyStop"]


def test_an_llm_with_an_initial_lr_trains_without_the_baseline():
    off = {"enabled": False}
    spec = {"model": {"source": "/data/models/Qwen2-Audio-7B-Instruct", "family": "llm"},
            "training": {"initialLearningRate": 5e-5}, "baseline": off, "filter": off,
            "profile": off, "augmentation": off, "evaluation": off}  # fmt: skip
    cluster = Cluster(body(spec))
    cluster.step()
    assert cluster.phase == "Training", cluster.obj["status"].get("message")
    assert cluster.directive.learning_rate == 5e-5
    assert cluster.obj["status"]["cycles"][0]["reason"] == "spec.training.initialLearningRate"


def test_a_replaced_rank_0_whose_history_restarts_keeps_the_closed_cycle():
    cluster = Cluster(body())
    run_to_training(cluster)
    cluster.evaluate(30.0)
    cluster.evaluate(28.0)
    cluster.step()  # closes cycle 0 on [30, 28]
    closed = copy.deepcopy(cluster.obj["status"]["cycles"][0])
    assert (closed["wers"], cluster.directive.cycle) == ([30.0, 28.0], 1)
    del cluster.history[1:]  # the new rank 0 resumed from the checkpoint at step 50
    cluster.evaluate(29.0)  # step 100 again, now in cycle 1
    cluster.step()
    status = cluster.obj["status"]
    assert status["cycles"][0] == closed
    assert (status["cycle"], status["cycles"][1]["wers"]) == (1, [29.0])


def test_disabled_stages_are_skipped():
    cluster = Cluster(body({"filter": {"enabled": False}, "profile": {"enabled": False},
                            "augmentation": {"enabled": False}}))  # fmt: skip
    cluster.step()
    assert cluster.phase == "Baseline"
    stages = cluster.obj["status"]["stages"]
    # The LR trials are off unless the spec asks for them; nothing is remote to fetch, no
    # push is asked for.
    assert {s for s, v in stages.items() if v["state"] == "Skipped"} == {
        "fetch", "filter", "profile", "augment", "trials", "push"}  # fmt: skip


def test_vanished_training_job_restarts_under_the_directive_in_force():
    cluster = Cluster(body())
    run_to_training(cluster)
    cluster.evaluate(30.0)
    cluster.evaluate(29.0)
    cluster.step()
    in_force = cluster.directive
    # Eq. 1: σ(30, 29) = 0.5 = σ_ref, so cycle 1 runs at η_min = 1e-7 (not cycle 0's 1e-6).
    assert in_force.cycle == 1 and in_force.learning_rate == pytest.approx(1e-7, rel=1e-9)
    del cluster.jobs["train"]
    outcome = cluster.step()
    (job,) = [c for c in children(outcome, Owner.from_body(cluster.obj)) if c["kind"] == "Job"]
    assert (
        f"--learning-rate {in_force.learning_rate!r}"
        in (job["spec"]["template"]["spec"]["containers"][0]["command"][-1])
    )
    assert outcome.directive == in_force and outcome.start[0].stage == "train"
    assert [c["cycle"] for c in cluster.obj["status"]["cycles"]] == [0, 1]


@pytest.mark.parametrize(
    ("kind", "sigma_wer", "lr"),
    [
        # WERs 40.0, 38.0, 36.1 at steps 50, 100, 150 (cycleSteps 150 / evalEvery 50 = 3).
        # population: mean 38.03333, squares 3.86778 + 0.00111 + 3.73778 = 7.60667, / 3,
        # sqrt: σ = 1.59235 ≥ σ_ref → η_min = 1e-7.
        (None, 1.59235, 1e-7),
        # trend-residual: x̄ = 100, Sxx = 5000, Sxy = 50 · (36.1 − 40) = −195, slope −0.039,
        # intercept 38.03333 + 3.9 = 41.93333; residuals 1/60, −1/30, 1/60; σ =
        # sqrt((6/3600) / 3) = 0.0235702; η = 1e-5 − 9.9e-6 · 0.0235702 / 0.5
        # = 1e-5 − 4.666905e-7 = 9.533310e-6.
        ("trend-residual", 0.0235702, 9.533310e-6),
        # descent-excess: a descent is its own non-increasing fit, spread 0; with no
        # standard errors in these evaluations no noise either: σ 0 → η_max = 1e-5.
        ("descent-excess", 0.0, 1e-5),
    ],
)
def test_the_spec_sigma_reaches_the_decision_and_the_cycle_record(kind, sigma_wer, lr):
    training = {"cycleSteps": 150} if kind is None else {"cycleSteps": 150, "sigma": kind}
    cluster = Cluster(body({"training": training}))
    run_to_training(cluster)
    for wer in (40.0, 38.0, 36.1):
        cluster.evaluate(wer)
        cluster.step()
    assert cluster.directive.cycle == 1
    assert cluster.directive.learning_rate == pytest.approx(lr, rel=1e-6)
    record = cluster.obj["status"]["cycles"][0]
    assert record["sigmaWer"] == pytest.approx(sigma_wer, rel=1e-5)
    assert record["sigmaKind"] == (kind or "population")
    assert cluster.obj["status"]["sigmaWer"] == pytest.approx(sigma_wer, rel=1e-5)


@pytest.mark.parametrize(("mode", "stops"), [(None, True), ("cumulative", False)])
def test_the_spec_early_stopping_mode_reaches_the_decision(mode, stops):
    # The slow descent, 0.06 an evaluation, patience 3, threshold 0.1; cycles long
    # enough (1000 steps) that only the stop rule acts. Per evaluation: three gains under
    # 0.1 → stop after the 4th; cumulative: 0.18 over the last three → go on.
    stopping = {"patience": 3, "minImprovement": 0.1}
    if mode is not None:
        stopping["mode"] = mode
    cluster = Cluster(body({"training": {"cycleSteps": 1000, "earlyStopping": stopping}}))
    run_to_training(cluster)
    for wer in (30.00, 29.94, 29.88, 29.82):
        cluster.evaluate(wer)
        cluster.step()
    assert cluster.directive.stop is stops
    assert [e.reason for e in cluster.events if e.reason == "EarlyStop"] == (
        ["EarlyStop"] if stops else []
    )


def test_an_unknown_sigma_or_stopping_mode_is_refused_by_name():
    cluster = Cluster(body({"training": {"sigma": "median"}}))
    cluster.step()
    assert cluster.phase == "Invalid"
    assert cluster.obj["status"]["message"].startswith("spec.training.sigma: Input should be")
    stopping = {"earlyStopping": {"mode": "sometimes"}}
    cluster = Cluster(body({"training": stopping}))
    cluster.step()
    assert cluster.obj["status"]["message"].startswith(
        "spec.training.earlyStopping.mode: Input should be"
    )


# --- the LR trials stage -------------------------------------------------------------------

TRIALS_ON = {"trials": {"enabled": True, "count": 3}}


def run_to_trials(cluster):
    for stage in ("filter", "profile", "augment", "baseline"):
        cluster.step()
        cluster.finish(stage, **({"wer": 40.0} if stage == "baseline" else {}))
    cluster.step()
    assert cluster.phase == "Trials"


def command_of(cluster, name):
    job = next(c for c in cluster.created if c["kind"] == "Job" and c["metadata"]["name"] == name)
    return job["spec"]["template"]["spec"]["containers"][0]["command"]


def test_trials_run_one_job_per_candidate_and_train_starts_at_the_best():
    cluster = Cluster(body(TRIALS_ON))
    run_to_trials(cluster)
    # 3 log-spaced in whisper's default bounds [1e-7, 1e-5]: 1e-7, 1e-6, 1e-5, all at once.
    assert sorted(j.name for j in cluster.trials.values()) == [
        "demo-trials-0", "demo-trials-1", "demo-trials-2"]  # fmt: skip
    assert "train" not in cluster.jobs
    argv = command_of(cluster, "demo-trials-1")
    assert argv[0] == "marco-trainer" and argv[1] == "train"  # one process, not torchrun
    flags = " ".join(argv)
    assert "--learning-rate 1e-06 " in flags
    assert "--max-steps 50 --eval-every 10 " in flags  # spec.trials' defaults, not training's
    assert "--output-dir /output/marco-asr/demo/trials/lr-1 " in flags
    assert "--no-export" in flags and "--metrics-port 0" in flags
    assert "--control-file" not in flags  # nothing steers a trial
    records = cluster.obj["status"]["trials"]
    assert [(t["index"], t["learningRate"], t["state"]) for t in records] == [
        (0, 1e-7, "Pending"), (1, 1e-6, "Pending"), (2, 1e-5, "Pending")]  # fmt: skip
    cluster.trials[2] = JobState(name="demo-trials-2", stage="trials", trial=2)  # no pod yet
    cluster.step()
    states = [t["state"] for t in cluster.obj["status"]["trials"]]
    assert states == ["Running", "Running", "Pending"]
    created = len(cluster.created)
    cluster.finish_trial(0, [(10, 40.0), (20, 39.0)])
    cluster.finish_trial(1, [(10, 36.0), (20, 33.5)])
    cluster.step()  # one trial still runs: no decision, no train Job
    assert cluster.phase == "Trials" and len(cluster.created) == created
    cluster.finish_trial(2, [(10, 34.0), (20, 58.0)])  # a good start, then diverging
    cluster.step()
    status = cluster.obj["status"]
    assert cluster.phase == "Training" and status["stages"]["trials"]["state"] == "Succeeded"
    assert [t["chosen"] for t in status["trials"]] == [False, True, False]
    assert status["trials"][2]["curve"] == [{"step": 10, "wer": 34.0}, {"step": 20, "wer": 58.0}]
    assert (status["trials"][1]["bestWer"], status["trials"][1]["bestStep"]) == (33.5, 20)
    assert status["cycles"][0]["learningRate"] == 1e-6
    assert status["cycles"][0]["reason"] == "LR trials: best of 3"
    assert "--learning-rate 1e-06 " in command_of(cluster, "demo-train")[-1]
    assert cluster.directive.learning_rate == 1e-6
    decided = [e.message for e in cluster.events if e.reason == "TrialsDecided"]
    assert decided == ["LR 1e-06 chosen: best WER 33.50% (trial 1 of 3)"]
    cluster.step()
    assert sum(e.reason == "TrialsDecided" for e in cluster.events) == 1  # decided once


def test_a_failed_trial_is_recorded_and_the_others_still_decide():
    cluster = Cluster(body(TRIALS_ON))
    run_to_trials(cluster)
    cluster.fail_trial(1, "BackoffLimitExceeded: out of memory")
    cluster.step()
    failed = cluster.obj["status"]["trials"][1]
    assert failed["state"] == "Failed" and "out of memory" in failed["message"]
    assert cluster.phase == "Trials"
    # A tie between the rest: the smaller LR, 1e-7, wins.
    cluster.finish_trial(0, [(10, 30.0)])
    cluster.finish_trial(2, [(10, 30.0)])
    cluster.step()
    status = cluster.obj["status"]
    assert cluster.phase == "Training" and status["learningRate"] == 1e-7
    assert status["stages"]["trials"]["message"] == (
        "LR 1e-07 chosen: best WER 30.00% (trial 0 of 3, 1 failed)"
    )
    assert [e.reason for e in cluster.events].count("TrialFailed") == 1


def test_all_trials_failed_fails_the_adaptation():
    cluster = Cluster(body(TRIALS_ON))
    run_to_trials(cluster)
    for index in range(3):
        cluster.fail_trial(index, f"exit code {index + 1}")
    cluster.step()
    status = cluster.obj["status"]
    assert cluster.phase == "Failed" and "train" not in cluster.jobs
    assert status["message"].startswith("all 3 LR trials failed: trial 0 (LR 1e-07): exit code 1")
    assert status["stages"]["trials"]["state"] == "Failed"


def test_explicit_trial_lrs_outside_the_family_bounds_are_invalid():
    # Bounds not in the spec: whisper's default [1e-7, 1e-5] applies, and 1e-4 is outside.
    cluster = Cluster(body({"trials": {"enabled": True, "learningRates": [1e-6, 1e-4]}}))
    for stage in ("filter", "profile", "augment", "baseline"):
        cluster.step()
        cluster.finish(stage)
    cluster.step()
    assert cluster.phase == "Invalid" and cluster.trials == {}
    assert cluster.obj["status"]["message"] == (
        "spec.trials.learningRates: 0.0001 outside the LR bounds [1e-07, 1e-05]"
    )


def test_llm_trials_replace_eq2_for_cycle_0_and_need_no_baseline():
    cluster = Cluster(body({
        "model": {"source": "/data/models/custom", "family": "llm"},
        "baseline": {"enabled": False},
        "trials": {"enabled": True, "learningRates": [1e-5, 1e-6]},
    }))  # fmt: skip
    for stage in ("filter", "profile", "augment"):
        cluster.step()
        cluster.finish(stage)
    cluster.step()
    assert cluster.phase == "Trials"
    cluster.finish_trial(0, [(10, 20.0)])
    cluster.finish_trial(1, [(10, 25.0)])
    cluster.step()
    status = cluster.obj["status"]
    assert cluster.phase == "Training" and status["cycles"][0]["learningRate"] == 1e-5


def started(outcome):
    return [(e.message, e.key) for e in outcome.events if e.reason == "StageStarted"]


@pytest.mark.parametrize("stage", ["filter", "train"])
def test_a_start_whose_status_was_lost_is_said_by_the_next_pass_under_the_same_key(stage):
    cluster = Cluster(body())
    if stage == "train":
        run_to_training(cluster)  # ends with the pass that created the train Job
        del cluster.jobs["train"]
        cluster.obj["status"]["stages"]["train"] = {"state": "Pending"}
    saved_status = copy.deepcopy(cluster.obj.get("status"))
    creating = cluster.step()  # creates the Job ...
    cluster.obj["status"] = saved_status  # ... but its status (and maybe its Events) was lost
    again = cluster.step()
    ((message, key),) = started(creating)
    assert message == f"created Job demo-{stage}"
    # The same Event again: where the first landed, the API server refuses it as existing.
    assert started(again) == [(message, key)] and key is not None
    assert cluster.obj["status"]["stages"][stage]["state"] == "Running"
    assert started(cluster.step()) == []  # recorded now: not said a third time


def test_a_start_recorded_in_the_status_is_not_said_again():
    cluster = Cluster(body())
    assert len(started(cluster.step())) == 1
    assert started(cluster.step()) == []


def test_a_retried_stage_starts_under_a_new_key():
    cluster = Cluster(body())
    (first,) = started(cluster.step())
    cluster.jobs["filter"] = JobState(
        name="demo-filter", stage="filter", failed=True, failure_reason="BackoffLimitExceeded"
    )
    cluster.step()
    assert cluster.phase == "Failed"
    cluster.obj["metadata"]["annotations"] = {"asr.marco.dev/retry": "1"}
    del cluster.jobs["filter"]  # the failed Job deleted, as the retry asks
    (second,) = started(cluster.step()) + started(cluster.step())
    assert second[0] == first[0] and second[1] != first[1]


def test_a_retry_deletes_the_failed_job_it_saw_by_its_uid():
    """The delete carries the failed Job's uid: should a newer Job of that name exist by the
    time the delete arrives, the API server refuses it (a precondition) instead."""
    cluster = Cluster(body())
    cluster.step()
    cluster.jobs["filter"] = JobState(
        name="demo-filter", stage="filter", failed=True, failure_reason="BackoffLimitExceeded",
        uid="3c1e0a52-failed",
    )  # fmt: skip
    cluster.step()
    cluster.obj["metadata"]["annotations"] = {"asr.marco.dev/retry": "1"}
    outcome = cluster.step()
    assert outcome.delete == [Child("Job", "demo-filter", uid="3c1e0a52-failed")]
    assert outcome.start == []


def test_trials_whose_start_was_lost_are_said_by_the_next_pass():
    cluster = Cluster(body({"trials": {"enabled": True, "count": 2, "steps": 10}}))
    for stage in ("filter", "profile", "augment", "baseline"):
        cluster.step()
        cluster.finish(stage, **({"wer": 40.0} if stage == "baseline" else {}))
    saved_status = copy.deepcopy(cluster.obj["status"])
    creating = cluster.step()
    assert cluster.phase == "Trials"
    cluster.obj["status"] = saved_status
    again = cluster.step()
    assert len(started(creating)) == 2 and sorted(started(again)) == sorted(started(creating))
    assert started(cluster.step()) == []


@pytest.mark.parametrize("ending", ["complete", "failed"])
def test_a_start_whose_status_was_lost_is_said_when_its_job_ended_before_the_next_pass(ending):
    cluster = Cluster(body())
    (said,) = started(cluster.step())
    cluster.obj["status"] = {}  # the creating pass's status was lost ...
    if ending == "complete":  # ... and its Job ended before the next pass
        cluster.finish("filter", counts={"kept": 3})
    else:
        cluster.jobs["filter"] = JobState(
            name="demo-filter", stage="filter", failed=True, failure_reason="BackoffLimitExceeded"
        )
    # Said first: the filter's start, then (complete) the profile stage it leads to.
    expected = [said] + ([("created Job demo-profile", "started/demo-profile")]
                         if ending == "complete" else [])  # fmt: skip
    assert started(cluster.step()) == expected
