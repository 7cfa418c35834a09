"""`marco operator` against kmock's API emulator: the kopf driver and core.reconcile together.

The test plays the Job controller and kubelet (jobs fixture) and rank 0 (trainer fixture):
it completes or fails the Jobs the operator creates and scripts the validation WERs
rank 0 serves, then reads what a user reads with kubectl: status, Events, children.
"""

from __future__ import annotations

import copy
import math
import re
import time
from typing import Any

import pytest

from marco_contract.formats import StageResult
from marco_operator import core
from marco_operator.api import PLURAL
from marco_operator.kopf_driver import FINALIZER
from marco_operator.kube import USER_AGENT, collection_path
from marco_operator.rank0 import TRAINER_STARTUP_SECONDS
from marco_operator.rbac import (
    GANG_RULES,
    OPERATOR_RULES,
    namespaced_cluster_rules,
    namespaced_rules,
)
from marco_operator.reconciler import control_path

from .harness import (
    NAMESPACE,
    OTHER_NAMESPACE,
    SHARED_CLAIM,
    EmulatedCluster,
    Fault,
    JobController,
    OperatorProcess,
    OperatorRun,
    ScriptedTrainer,
    free_port,
    wait_for,
)

NAME = "telephony"  # the scripted rank 0 serves this adaptation
ONLY_TRAINING = {
    "filter": {"enabled": False},
    "profile": {"enabled": False},
    "augmentation": {"enabled": False},
    "baseline": {"enabled": False},
    "evaluation": {"enabled": False},
}

pytestmark = pytest.mark.timeout(60)


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def make_spec(**overrides: Any) -> dict[str, Any]:
    """A small adaptation: cycles of three evaluations, a one-second stop grace period."""
    base = {
        # A model folder on the volume: nothing to fetch (a hub id adds the fetch stage).
        "model": {"source": "/data/models/whisper-tiny"},
        "data": {
            "volumeClaim": SHARED_CLAIM,
            "train": ["train.jsonl"],
            "validation": "validation.jsonl",
            "test": "test.jsonl",
            "targetAudio": "target",
        },
        "training": {
            "learningRate": {"min": 1e-7, "max": 1e-5},
            "sigmaRef": 0.5,
            "cycleSteps": 30,
            "evalEvery": 10,
            "earlyStopping": {"patience": 50, "minImprovement": 0.1},
            "stopGracePeriodSeconds": 1,
        },
    }
    return _deep_merge(base, overrides)


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    found = [c for c in status.get("conditions", []) if c["type"] == type_]
    assert len(found) == 1, f"one {type_} condition expected in {status.get('conditions')}"
    return found[0]


def phase_is(cluster: EmulatedCluster, phase: str):
    return lambda: (s := cluster.status(NAME)).get("phase") == phase and s


def events_in_order(cluster: EmulatedCluster, reason: str | None = None) -> list[dict]:
    events = sorted(cluster.events(NAME), key=lambda e: int(e["metadata"]["resourceVersion"]))
    return [e for e in events if reason is None or e["reason"] == reason]


def eq1(wers: list[float], lr_min: float, lr_max: float, sigma_ref: float) -> float:
    """Eq. 1 written out: η_{j+1} = η_max − (η_max − η_min)·clip(σ_WER(j)/σ_ref, 0, 1),
    σ_WER(j) the (population) standard deviation of the WERs measured in cycle j."""
    mean = sum(wers) / len(wers)
    sigma = math.sqrt(sum((w - mean) ** 2 for w in wers) / len(wers))
    return lr_max - (lr_max - lr_min) * min(1.0, max(0.0, sigma / sigma_ref))


def eq2(wer: float, lr_min: float, lr_max: float) -> float:
    """Eq. 2 written out: η = η'_min + (η'_max − η'_min)·clip(WER, 0, 100)/100."""
    return lr_min + (lr_max - lr_min) * min(100.0, max(0.0, wer)) / 100.0


def run_cycle(trainer: ScriptedTrainer, cluster: EmulatedCluster, wers: list[float]):
    """Rank 0 measures one cycle's WERs; the operator must answer with the next cycle."""
    cycle = trainer.directive().cycle
    for wer in wers:
        trainer.evaluate(wer)
    return wait_for(
        f"the directive of cycle {cycle + 1}",
        lambda: d if (d := cluster.directive(NAME)) and d.cycle == cycle + 1 else None,
    )


def status_at_cycle(cluster: EmulatedCluster, cycle: int) -> dict[str, Any]:
    return wait_for(
        f"status of cycle {cycle}",
        lambda: (s := cluster.status(NAME)).get("cycle") == cycle and s,
    )


def sample(run: OperatorRun, name: str, **labels: str) -> float | None:
    return run.metrics.registry.get_sample_value(name, labels)


def passes(run: OperatorRun) -> float:
    """Reconcile passes the operator has completed so far."""
    return sample(run, "marco_operator_reconciles_total", result="success") or 0.0


def more_passes(run: OperatorRun, count: int = 3) -> None:
    """Wait until the operator has made `count` more passes: whatever it was going to do
    about what it saw before has been done."""
    target = passes(run) + count
    wait_for(f"{count} more passes", lambda: passes(run) >= target)


def idle(run: OperatorRun, quiet: float = 1.5) -> None:
    """Wait until the operator has made no pass for `quiet` seconds."""
    last = {"passes": passes(run), "since": time.monotonic()}

    def quiet_for() -> bool:
        if passes(run) != last["passes"]:
            last.update(passes=passes(run), since=time.monotonic())
        return time.monotonic() - last["since"] >= quiet

    wait_for(f"{quiet}s without a pass", quiet_for)


def loop_stopped(run: OperatorRun) -> None:
    """Wait until no adaptation has a reconcile loop: a settled one gets no more passes."""
    wait_for(
        "the reconcile loop to stop", lambda: sample(run, "marco_operator_reconcile_loops") == 0
    )


def test_an_adaptation_goes_through_every_phase_to_succeeded(
    cluster: EmulatedCluster, jobs: JobController, operator
) -> None:
    # A hub id and a data source to fetch, a token for the hub, a push at the end.
    remote = make_spec(
        model={"source": "openai/whisper-tiny", "tokenSecret": {"name": "hf-token"}},
        data={"sources": [{"uri": "s3://corpora/callcentre", "path": "callcentre"}]},
        output={"push": {"uri": "hf://org/whisper-callcentre"}},
    )
    created = cluster.apply_adaptation(NAME, remote)
    pushed = "pushed to hf://org/whisper-callcentre: https://hub/commit/c0mm1t"
    results = {
        "fetch": ("Fetching", StageResult(stage="fetch", message="fetched model openai/...")),
        "filter": ("Filtering", StageResult(stage="filter", counts={"kept": 9, "skipped": 1})),
        "profile": ("Profiling", StageResult(stage="profile", counts={"processed": 5})),
        "augment": ("Augmenting", StageResult(stage="augment", counts={"written": 18})),
        "baseline": ("Baseline", StageResult(stage="baseline", wer=31.5, family="encoder-decoder")),
        "train": ("Training", StageResult(stage="train", wer=22.0, best_step=40, steps=60)),
        "evaluate": ("Evaluating", StageResult(stage="evaluate", wer=21.0)),
        "push": ("Pushing", StageResult(stage="push", message=pushed)),
    }
    for stage, (phase, result) in results.items():
        job = jobs.wait_job(NAME, stage)
        (container,) = job["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in container["env"]}
        # The hub token by reference, to the two stages that go online; the others offline.
        online = stage in ("fetch", "push")
        token = {"secretKeyRef": {"name": "hf-token", "key": "token"}}
        assert (env.get("HF_TOKEN", {}).get("valueFrom") == token) is online, stage
        assert ("HF_HUB_OFFLINE" not in env) is online, stage
        status = wait_for(f"phase {phase}", phase_is(cluster, phase))
        ready = condition(status, "Ready")
        assert (ready["status"], ready["reason"]) == ("False", phase)
        assert status["stages"][stage]["state"] == "Running"
        jobs.complete(job, result)

    status = wait_for("phase Succeeded", phase_is(cluster, "Succeeded"))
    body = cluster.adaptation(NAME)
    assert status["observedGeneration"] == body["metadata"]["generation"] == 1
    ready = condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Succeeded")
    assert status["baselineWer"] == 31.5
    assert status["finalWer"] == 21.0
    assert status["bestWer"] == 22.0
    assert status["stages"]["filter"]["counts"] == {"kept": 9, "skipped": 1}
    assert status["stages"]["push"]["message"] == pushed
    states = {stage: s["state"] for stage, s in status["stages"].items()}
    assert states.pop("trials") == "Skipped"  # off unless the spec asks for them
    assert set(states.values()) == {"Succeeded"}

    phases = [e["message"] for e in events_in_order(cluster, "PhaseChanged")]
    assert phases == [
        "Pending → Fetching",
        "Fetching → Filtering",
        "Filtering → Profiling",
        "Profiling → Augmenting",
        "Augmenting → Baseline",
        "Baseline → Training",
        "Training → Evaluating",
        "Evaluating → Pushing",
        "Pushing → Succeeded: baseline WER 31.50% (validation), final WER 21.00% (test)",
    ]
    children = cluster.jobs(NAME)
    assert sorted(j["metadata"]["labels"]["asr.marco.dev/stage"] for j in children) == sorted(
        results
    )
    for child in children:
        (owner,) = child["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"]) == ("AsrAdaptation", created["metadata"]["uid"])


def test_the_learning_rate_follows_eq1_cycle_by_cycle(
    cluster: EmulatedCluster, jobs: JobController, trainer: ScriptedTrainer, operator
) -> None:
    cluster.apply_adaptation(NAME, make_spec(**ONLY_TRAINING))
    jobs.start(jobs.wait_job(NAME, "train"))
    first = wait_for("the first directive", lambda: cluster.directive(NAME))
    # Cycle 0 of a shallow decoder (whisper-tiny: 4 layers) starts at the geometric mean.
    assert first.cycle == 0
    assert first.learning_rate == pytest.approx(math.sqrt(1e-7 * 1e-5), rel=1e-9)

    cycles = [
        [30.0, 29.2, 29.9],  # σ ≈ 0.36: unstable, LR drops towards η_min
        [28.1, 28.0, 28.05],  # σ ≈ 0.04: stable, LR close to η_max
        [27.0, 28.4, 26.2],  # σ ≈ 0.91 > σ_ref: clipped, LR = η_min
    ]
    expected = []
    for wers in cycles:
        directive = run_cycle(trainer, cluster, wers)
        expected.append(eq1(wers, 1e-7, 1e-5, 0.5))
        assert directive.learning_rate == pytest.approx(expected[-1], rel=1e-9)
        assert not directive.stop
    assert expected[1] > expected[0] > expected[2] == pytest.approx(1e-7)

    status = status_at_cycle(cluster, 3)
    assert status["phase"] == "Training"
    assert status["learningRate"] == pytest.approx(expected[-1], rel=1e-9)
    recorded = status["cycles"]
    assert [c["cycle"] for c in recorded] == [0, 1, 2, 3]
    assert [c["learningRate"] for c in recorded[1:]] == pytest.approx(expected, rel=1e-9)
    for record, wers in zip(recorded, cycles, strict=False):
        assert record["wers"] == wers
    changes = [e["message"] for e in events_in_order(cluster, "LearningRateChanged")]
    assert [m.split(" at ")[0] for m in changes] == ["cycle 1", "cycle 2", "cycle 3"]
    assert sample(operator, "marco_operator_decisions_total", reason="LearningRateChanged") == 3
    # The trainer's mounted file is the ConfigMap: rank 0 reports the directive it applies.
    assert trainer.history().directive.cycle == 3


def test_an_llm_trains_at_eq2_from_the_baseline_wer(
    cluster: EmulatedCluster, jobs: JobController, trainer: ScriptedTrainer, operator
) -> None:
    spec = make_spec(
        model={"source": "/data/models/Qwen2-Audio-7B-Instruct"},
        training={"learningRate": {"min": 1e-6, "max": 1e-4}},
        **{k: v for k, v in ONLY_TRAINING.items() if k != "baseline"},
    )
    cluster.apply_adaptation(NAME, spec)
    assert jobs.cluster.job(NAME, "train") is None
    jobs.complete(jobs.wait_job(NAME, "baseline"), StageResult(stage="baseline", wer=42.0))

    train = jobs.wait_job(NAME, "train")
    directive = wait_for("the first directive", lambda: cluster.directive(NAME))
    expected = eq2(42.0, 1e-6, 1e-4)
    assert (directive.cycle, directive.learning_rate) == (0, pytest.approx(expected, rel=1e-9))
    command = " ".join(train["spec"]["template"]["spec"]["containers"][0]["command"])
    assert float(re.search(r"--learning-rate (\S+)", command).group(1)) == pytest.approx(expected)
    assert "--family llm" in command
    # The directive's ConfigMap is created before the status is patched in the same pass.
    status = wait_for("the first cycle", lambda: (s := cluster.status(NAME)).get("cycles") and s)
    assert (status["family"], status["baselineWer"]) == ("llm", 42.0)
    assert status["learningRate"] == pytest.approx(expected, rel=1e-9)
    assert "Eq. 2" in status["cycles"][0]["reason"]

    # At the cycle boundary Eq. 2 is re-applied with the cycle's mean WER: the gap closed.
    jobs.start(train)
    wers = [40.0, 38.0, 36.0]
    directive = run_cycle(trainer, cluster, wers)
    assert directive.learning_rate == pytest.approx(eq2(sum(wers) / 3, 1e-6, 1e-4), rel=1e-9)
    assert directive.learning_rate < expected


def test_a_plateau_stops_training_and_an_ignored_stop_deletes_the_job_and_evaluates(
    cluster: EmulatedCluster, jobs: JobController, trainer: ScriptedTrainer, operator
) -> None:
    spec = make_spec(
        training={"cycleSteps": 1000, "earlyStopping": {"patience": 3, "minImprovement": 0.1}},
        **{**ONLY_TRAINING, "evaluation": {"enabled": True}},
    )
    cluster.apply_adaptation(NAME, spec)
    job = jobs.wait_job(NAME, "train")
    jobs.start(job)
    wait_for("the first directive", lambda: cluster.directive(NAME))
    for wer in [30.0, 29.0, 29.05, 28.95]:  # best 28.95 at step 40; no 0.1 gain twice
        trainer.evaluate(wer)
    seen = trainer.requests
    wait_for("two more reads of rank 0", lambda: trainer.requests >= seen + 2)
    assert not cluster.directive(NAME).stop, "stopped before `patience` evaluations passed"

    trainer.evaluate(29.1)  # third evaluation without a 0.1-point improvement
    stop = wait_for("a stop directive", lambda: (d := cluster.directive(NAME)) and d.stop and d)
    assert "early stop" in stop.reason and "28.95% at step 40" in stop.reason

    # The scripted trainer ignores it; after the grace period the Job is deleted, pods first
    # (foreground), and never suspended: spec.suspend is Kueue's.
    wait_for("the train Job deleted", lambda: cluster.job(NAME, "train") is None)
    deleted_seen = time.time()
    path = cluster.path("batch/v1", "jobs", f"{NAME}-train")
    assert (path, "Foreground") in cluster.deletions
    # The status is the pass's commit point, written after its deletes (reconciler.apply).
    status = wait_for(
        "the enforced stop in the status",
        lambda: (s := cluster.status(NAME))["stages"]["train"]["state"] != "Running" and s,
    )
    assert deleted_seen - status["stop"]["requestedAt"] >= 1.0, "deleted before the grace"
    train = status["stages"]["train"]
    assert train["state"] == "Succeeded" and "stop enforced" in train["message"]
    assert (status["bestWer"], status["bestStep"]) == (28.95, 40)

    # Evaluate exports the best checkpoint the killed trainer did not, and measures it.
    evaluate = jobs.wait_job(NAME, "evaluate")
    command = evaluate["spec"]["template"]["spec"]["containers"][0]["command"]
    out = f"/output/marco-asr/{NAME}/train"
    assert command[command.index("--export-checkpoint") + 1] == f"{out}/checkpoints/best"
    assert command[command.index("--model") + 1] == f"{out}/export"
    jobs.complete(evaluate, StageResult(stage="evaluate", wer=28.5))
    status = wait_for("phase Succeeded", phase_is(cluster, "Succeeded"))
    assert status["finalWer"] == 28.5
    ready = condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Succeeded")
    reasons = [e["reason"] for e in events_in_order(cluster)]
    assert reasons.index("EarlyStop") < reasons.index("StopNotHonoured")
    (warning,) = events_in_order(cluster, "StopNotHonoured")
    assert warning["type"] == "Warning" and f"deleting Job {NAME}-train" in warning["message"]
    phases = [e["message"].split(":")[0] for e in events_in_order(cluster, "PhaseChanged")]
    assert phases[-2:] == ["Training → Evaluating", "Evaluating → Succeeded"]
    for reason in ("EarlyStop", "StopNotHonoured"):
        assert sample(operator, "marco_operator_decisions_total", reason=reason) == 1


def test_a_stop_the_trainer_honours_ends_in_success_with_the_best_checkpoint(
    cluster: EmulatedCluster, jobs: JobController, trainer: ScriptedTrainer, operator
) -> None:
    spec = make_spec(
        training={
            "cycleSteps": 1000,
            "earlyStopping": {"patience": 2, "minImprovement": 0.1},
            "stopGracePeriodSeconds": 30,
        },
        **ONLY_TRAINING,
    )
    cluster.apply_adaptation(NAME, spec)
    job = jobs.wait_job(NAME, "train")
    jobs.start(job)
    wait_for("the first directive", lambda: cluster.directive(NAME))
    for wer in [25.0, 24.0, 24.5, 24.2]:
        trainer.evaluate(wer)
    wait_for("a stop directive", lambda: (d := cluster.directive(NAME)) and d.stop)
    # Rank 0 exports the best checkpoint and exits 0: the Job completes.
    trainer.finished = True
    jobs.complete(job, StageResult(stage="train", wer=24.0, best_step=20, steps=40))
    status = wait_for("phase Succeeded", phase_is(cluster, "Succeeded"))
    assert (status["bestWer"], status["bestStep"], status["step"]) == (24.0, 20, 40)
    assert status["stop"]["reason"].startswith("early stop")
    assert cluster.job(NAME, "train")["spec"].get("suspend") is not True
    assert events_in_order(cluster, "StopNotHonoured") == []
    assert cluster.deletions == []


def test_a_failed_job_fails_the_adaptation_with_its_reason(
    cluster: EmulatedCluster, jobs: JobController, operator
) -> None:
    cluster.apply_adaptation(NAME, make_spec())
    jobs.fail(
        jobs.wait_job(NAME, "filter"),
        reason="BackoffLimitExceeded",
        message="Job has reached the specified backoff limit",
        log_tail="Traceback (most recent call last): ... OSError: disk full",
    )
    status = wait_for("phase Failed", phase_is(cluster, "Failed"))
    assert "BackoffLimitExceeded: Job has reached the specified backoff limit" in status["message"]
    assert status["message"].startswith("filter Job telephony-filter failed")
    ready = condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "StageFailed")
    assert status["stages"]["filter"]["state"] == "Failed"
    loop_stopped(operator)
    assert [j["metadata"]["name"] for j in cluster.jobs(NAME)] == ["telephony-filter"]
    (changed,) = [e for e in events_in_order(cluster, "PhaseChanged") if "Failed" in e["message"]]
    assert changed["type"] == "Warning"
    assert sample(operator, "marco_operator_adaptations", phase="Failed") == 1

    # Deleted (kopf releases its finalizer): the phase gauge forgets it.
    path = cluster.path("asr.marco.dev/v1alpha1", "asradaptations", NAME)
    cluster.kube.request("DELETE", path)
    wait_for("the adaptation gone", lambda: cluster.kube.get(path) is None)
    wait_for(
        "the gauge to drop the deleted adaptation",
        lambda: sample(operator, "marco_operator_adaptations", phase="Failed") == 0,
    )


def test_an_operator_killed_mid_training_resumes_without_repeating_itself(
    cluster: EmulatedCluster, jobs: JobController, trainer: ScriptedTrainer, tmp_path
) -> None:
    first = OperatorProcess(cluster, trainer.port, tmp_path).start()
    try:
        cluster.apply_adaptation(NAME, make_spec(**ONLY_TRAINING))
        jobs.start(jobs.wait_job(NAME, "train"))
        wait_for("the first directive", lambda: cluster.directive(NAME))
        run_cycle(trainer, cluster, [30.0, 29.2, 29.9])
        before = status_at_cycle(cluster, 1)
        trainer.evaluate(28.1)
        trainer.evaluate(28.0)
    finally:
        first.kill()
    trainer.evaluate(28.05)  # the cycle closes while no operator runs

    second = OperatorProcess(cluster, trainer.port, tmp_path).start()
    try:
        directive = wait_for(
            "the directive of cycle 2",
            lambda: (d := cluster.directive(NAME)) and d.cycle == 2 and d,
        )
        assert directive.learning_rate == pytest.approx(eq1([28.1, 28.0, 28.05], 1e-7, 1e-5, 0.5))
        status = status_at_cycle(cluster, 2)
        target = second.metric("marco_operator_reconciles_total", {"result": "success"}) + 2
        # Passes after it (evaluations wake them: the follower stands in for timed passes)
        # take none of the first operator's decisions again.
        for wer in (27.9, 27.8):
            trainer.evaluate(wer)
            wait_for(f"WER {wer} in the status", lambda w=wer: cluster.status(NAME)["wer"] == w)
        wait_for(
            "two more passes",
            lambda: (
                second.metric("marco_operator_reconciles_total", {"result": "success"}) >= target
            ),
        )
        # The restarted operator took one decision (cycle 2), none of the first one's again.
        assert second.metric_sum("marco_operator_decisions_total") == 1
        learning_rate_changes = {"reason": "LearningRateChanged"}
        assert second.metric("marco_operator_decisions_total", learning_rate_changes) == 1
        assert second.metric("marco_operator_adaptations", {"phase": "Training"}) == 1
        assert second.metric("marco_operator_reconciles_total", {"result": "success"}) > 1
    finally:
        second.stop()

    assert [c["learningRate"] for c in status["cycles"][:2]] == [
        c["learningRate"] for c in before["cycles"][:2]
    ]
    assert [c["reason"] for c in status["cycles"][:2]] == [
        c["reason"] for c in before["cycles"][:2]
    ]
    assert status["cycles"][1]["wers"] == [28.1, 28.0, 28.05]
    stages = [j["metadata"]["labels"]["asr.marco.dev/stage"] for j in cluster.jobs(NAME)]
    assert stages == ["train"]
    configmaps = cluster.kube.list(cluster.path("v1", "configmaps"))
    services = cluster.kube.list(cluster.path("v1", "services"))
    assert [c["metadata"]["name"] for c in configmaps] == ["telephony-control"]
    assert [s["metadata"]["name"] for s in services] == ["telephony-train"]
    changes = [
        e["message"].split(" at ")[0] for e in events_in_order(cluster, "LearningRateChanged")
    ]
    assert changes == ["cycle 1", "cycle 2"], "a decision was taken twice"


def test_learning_rate_bounds_upside_down_are_refused_with_the_field_named(
    cluster: EmulatedCluster, jobs: JobController, operator
) -> None:
    spec = make_spec(training={"learningRate": {"min": 1e-5, "max": 1e-7}})
    cluster.apply_adaptation(NAME, spec)
    status = wait_for("phase Invalid", phase_is(cluster, "Invalid"))
    ready = condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert ready["message"].startswith("spec.training.learningRate")
    assert "learningRate.min must be below learningRate.max" in ready["message"]
    assert status["observedGeneration"] == 1
    loop_stopped(operator)
    assert cluster.jobs(NAME) == []
    (event,) = events_in_order(cluster, "InvalidSpec")
    assert event["type"] == "Warning" and "spec.training.learningRate" in event["message"]
    assert sample(operator, "marco_operator_errors_total", kind="invalid-spec") == 1
    assert sample(operator, "marco_operator_adaptations", phase="Invalid") == 1

    # Fixing the spec (a new generation) lets it run.
    cluster.kube.merge_patch(
        cluster.path("asr.marco.dev/v1alpha1", "asradaptations", NAME),
        {"spec": {"training": {"learningRate": {"min": 1e-7, "max": 1e-5}}}},
    )
    jobs.wait_job(NAME, "filter")
    status = wait_for("phase Filtering", phase_is(cluster, "Filtering"))
    assert status["observedGeneration"] == cluster.adaptation(NAME)["metadata"]["generation"] == 2


def test_a_namespaced_operator_serves_only_its_namespaces(
    cluster: EmulatedCluster, jobs: JobController, trainer: ScriptedTrainer
) -> None:
    run = OperatorRun(cluster, trainer.port, namespaces=(NAMESPACE,)).start()
    try:
        cluster.apply_adaptation(NAME, make_spec(), namespace=OTHER_NAMESPACE)
        cluster.apply_adaptation(NAME, make_spec())
        jobs.wait_job(NAME, "filter")
        wait_for("phase Filtering", phase_is(cluster, "Filtering"))
        more_passes(run)
    finally:
        run.stop()
    assert "status" not in cluster.adaptation(NAME, OTHER_NAMESPACE)
    elsewhere = collection_path("batch/v1", "jobs", OTHER_NAMESPACE)
    assert cluster.kube.list(elsewhere) == []
    # The namespaced chart's Roles and small ClusterRole allow every call this mode makes.
    allowed = {
        (rule.api_group, rule.resource, verb)
        for rule in namespaced_rules() + namespaced_cluster_rules()
        for verb in rule.verbs
    }
    used = cluster.operator_rbac()
    assert used <= allowed, f"calls the namespaced chart does not allow: {sorted(used - allowed)}"
    assert ("", "namespaces", "watch") in used


def test_the_operator_needs_exactly_the_rbac_rules_the_chart_grants(
    cluster: EmulatedCluster, jobs: JobController, trainer: ScriptedTrainer
) -> None:
    """Derive RBAC from every request the operator made over a whole run (a predecessor's
    leftovers deleted, children created, a Job without pods asked why, rank 0 found,
    directive patched, a Job deleted for a stop not honoured, Events, status) and compare it
    with OPERATOR_RULES,
    from which the Helm chart's Roles are rendered."""
    operator = OperatorRun(cluster, trainer.port, no_pod_seconds=0.5).start()
    try:
        _a_whole_run(cluster, jobs, trainer)
    finally:
        operator.stop()

    granted = {
        (rule.api_group, rule.resource, verb) for rule in OPERATOR_RULES for verb in rule.verbs
    }
    used = cluster.operator_rbac()
    assert used <= granted, f"calls the chart does not allow: {sorted(used - granted)}"
    # PodGroups are made only under spec.resources.gangScheduling, which this run has not:
    # test_operator_gang uses those rights.
    gang = {(rule.api_group, rule.resource, verb) for rule in GANG_RULES for verb in rule.verbs}
    unused = granted - gang - used
    assert not unused, f"rights the operator never used: {sorted(unused)}"


def _a_whole_run(cluster: EmulatedCluster, jobs: JobController, trainer: ScriptedTrainer) -> None:
    spec = make_spec(
        training={"cycleSteps": 20, "earlyStopping": {"patience": 3, "minImprovement": 0.1}}
    )
    # Its evaluate Job: deleted before anything of this run starts, so the evaluate Job the
    # wait below meets is this run's. Its profile Job without our labels: found only when
    # creating this run's profile Job answers 409, then read (whose is it?) and deleted; so
    # is its Service without our labels, at the train stage.
    cluster.leave_predecessor(
        NAME, stages=("evaluate",), unlabelled=("profile",), unlabelled_service=True
    )
    cluster.apply_adaptation(NAME, spec)
    # The filter Job has no pod for a while: the operator reads its Events.
    jobs.wait_job(NAME, "filter")
    wait_for("the Job's Events read", lambda: ("", "events", "list") in cluster.operator_rbac())
    for stage in ("filter", "profile", "augment", "baseline"):
        extra = {"wer": 30.0} if stage == "baseline" else {}
        jobs.complete(jobs.wait_job(NAME, stage), StageResult(stage=stage, **extra))
    jobs.start(jobs.wait_job(NAME, "train"))
    wait_for("the first directive", lambda: cluster.directive(NAME))
    for wer in [30.0, 29.0]:  # closes cycle 0: the directive is patched
        trainer.evaluate(wer)
    wait_for("cycle 1", lambda: (d := cluster.directive(NAME)) and d.cycle == 1)
    for wer in [29.05, 29.1, 29.0]:  # a plateau; the scripted trainer ignores the stop
        trainer.evaluate(wer)
    # The stop enforced: the train Job deleted, evaluate runs the best checkpoint.
    jobs.complete(jobs.wait_job(NAME, "evaluate"), StageResult(stage="evaluate", wer=28.0))
    wait_for("phase Succeeded", phase_is(cluster, "Succeeded"))


def test_a_new_adaptation_s_first_pass_waits_for_kopf_s_finalizer(
    cluster: EmulatedCluster, jobs: JobController, operator
) -> None:
    """kopf starts the daemon, then adds its finalizer in a JSON patch tested against the
    resourceVersion it saw. A status written in between makes that patch a 409, and kopf
    stops handling the adaptation's events for a second before it tries again. Here kopf's
    patch is held for a second on its way, so that a first pass that did not wait for the
    finalizer would land first (it does, without the wait: checked)."""
    held = cluster.inject(Fault("PATCH", f"/{PLURAL}/{NAME}", delay=1.0, agent="kopf/"))
    cluster.apply_adaptation(NAME, make_spec())
    jobs.wait_job(NAME, "filter")
    wait_for(
        "kopf's finalizer",
        lambda: FINALIZER in (cluster.adaptation(NAME)["metadata"].get("finalizers") or ()),
    )
    assert held.hits == 1
    assert cluster.conflicts == [], "a write went out on a resourceVersion already gone"


def test_a_settled_adaptation_gets_no_passes(
    cluster: EmulatedCluster, jobs: JobController, operator
) -> None:
    cluster.apply_adaptation(NAME, make_spec())
    job = jobs.wait_job(NAME, "filter")
    wait_for("its loop", lambda: sample(operator, "marco_operator_reconcile_loops") == 1)
    jobs.fail(job, reason="BackoffLimitExceeded", message="limit", log_tail="boom")
    wait_for("phase Failed", phase_is(cluster, "Failed"))
    loop_stopped(operator)

    # Every pass reads the directive's ConfigMap (telephony-control), and would read or
    # write the adaptation: the driver's requests naming it count its passes.
    def passes_over_it() -> int:
        return sum(
            1 for _, path, _, agent in list(cluster.calls) if agent == USER_AGENT and NAME in path
        )

    before = passes_over_it()
    # What wakes a live adaptation's loop: an event of its Job, one of its own.
    job_path = cluster.path("batch/v1", "jobs", job["metadata"]["name"])
    cluster.kube.merge_patch(job_path + "/status", {"status": {"failed": 2}})
    cluster.kube.merge_patch(
        cluster.path("asr.marco.dev/v1alpha1", "asradaptations", NAME),
        {"metadata": {"annotations": {"example.com/touched": "yes"}}},
    )
    # The operator has handled those events once it serves an adaptation created after them.
    cluster.apply_adaptation("later", make_spec())
    jobs.wait_job("later", "filter")
    wait_for("later's phase", lambda: cluster.status("later").get("phase") == "Filtering")
    more_passes(operator)
    assert passes_over_it() == before
    assert sample(operator, "marco_operator_reconcile_loops") == 1  # later's only
    assert cluster.status(NAME)["phase"] == "Failed"
    assert sample(operator, "marco_operator_adaptations", phase="Failed") == 1


def test_core_s_requeue_paces_the_passes(
    cluster: EmulatedCluster, jobs: JobController, trainer: ScriptedTrainer, monkeypatch
) -> None:
    # A ceiling far beyond the test: only core's requeue (and events) can bring passes.
    monkeypatch.setattr(core, "REQUEUE_RUNNING", 0.2)
    run = OperatorRun(cluster, trainer.port, interval=60.0).start()
    try:
        cluster.apply_adaptation(NAME, make_spec())
        jobs.wait_job(NAME, "filter")
        wait_for("phase Filtering", phase_is(cluster, "Filtering"))
        # Nothing changes from here on: no event, and the status stays as it is.
        more_passes(run, count=5)
    finally:
        run.stop()


def training_with_a_first_evaluation(
    cluster: EmulatedCluster, jobs: JobController, trainer: ScriptedTrainer
) -> None:
    """A training-only adaptation whose train Job runs and whose rank 0 served one
    evaluation (WER 30), which a pass found through the pod in the index."""
    cluster.apply_adaptation(NAME, make_spec(**ONLY_TRAINING))
    jobs.start(jobs.wait_job(NAME, "train"))
    wait_for("the first directive", lambda: cluster.directive(NAME))
    trainer.evaluate(30.0)
    wait_for("the WER in the status", lambda: cluster.status(NAME).get("wer") == 30.0)


def test_passes_read_jobs_and_pods_from_the_watch_caches(
    cluster: EmulatedCluster, jobs: JobController, trainer: ScriptedTrainer, operator
) -> None:
    training_with_a_first_evaluation(cluster, jobs, trainer)

    first_call, first_pass = len(cluster.calls), passes(operator)
    # While rank 0 is followed, what changes brings the passes: evaluations here.
    for wer in (29.5, 29.0, 28.5):
        trainer.evaluate(wer)
        wait_for(f"WER {wer} in the status", lambda w=wer: cluster.status(NAME).get("wer") == w)
    calls = [c for c in list(cluster.calls)[first_call:] if c[3] == USER_AGENT]
    made = passes(operator) - first_pass
    assert made >= 3
    reads = [path for method, path, _, _ in calls if method == "GET"]
    writes = [path for method, path, _, _ in calls if method == "PATCH" and "configmaps" in path]
    # No listing of Jobs or pods. The only read is the directive's ConfigMap, and only
    # while the watch's copy is not the version the last pass wrote or read: at most once
    # after each of the operator's writes of it (the third evaluation ends cycle 0, one
    # write), and once for the version it started the window with.
    assert writes == [control_path(NAMESPACE, NAME)]
    assert set(reads) <= {control_path(NAMESPACE, NAME)}
    assert len(reads) <= len(writes) + 1 < made


def test_a_followed_training_costs_no_request_while_nothing_changes(
    cluster: EmulatedCluster, jobs: JobController, trainer: ScriptedTrainer, operator
) -> None:
    # The operator fixture's interval is 0.3 s: timed passes would come five times a 1.5 s.
    training_with_a_first_evaluation(cluster, jobs, trainer)
    first_call = len(cluster.calls)
    # The follower stands in for the timed passes: none while rank 0 has nothing new...
    idle(operator, quiet=1.5)
    sent = [c for c in list(cluster.calls)[first_call:] if c[3] == USER_AGENT and not c[2]]
    assert sent == []
    assert trainer.long_polled > 0
    # ...and a new evaluation is still decided on: the follower wakes the loop, once; the
    # echo of that pass's own status write wakes no other.
    before = passes(operator)
    trainer.evaluate(29.5)
    wait_for("the new WER in the status", lambda: cluster.status(NAME).get("wer") == 29.5)
    idle(operator, quiet=1.5)
    assert passes(operator) - before == 1


def test_lr_trials_run_as_parallel_jobs_and_the_best_sets_cycle_0(
    cluster: EmulatedCluster, jobs: JobController, trainer: ScriptedTrainer, operator
) -> None:
    spec = make_spec(trials={"enabled": True, "count": 3, "steps": 20}, **ONLY_TRAINING)
    cluster.apply_adaptation(NAME, spec)
    # All three at once, like a small sweep: 3 log-spaced LRs in [1e-7, 1e-5].
    trial_jobs = jobs.wait_trial_jobs(NAME, 3)
    assert [j["metadata"]["name"] for j in trial_jobs] == [f"{NAME}-trials-{i}" for i in range(3)]
    commands = [
        " ".join(j["spec"]["template"]["spec"]["containers"][0]["command"]) for j in trial_jobs
    ]
    assert [re.search(r"--learning-rate (\S+)", c).group(1) for c in commands] == [
        "1e-07", "1e-06", "1e-05"]  # fmt: skip
    assert all("--max-steps 20 " in c and "--control-file" not in c for c in commands)
    status = wait_for("phase Trials", phase_is(cluster, "Trials"))
    assert [t["state"] for t in status["trials"]] == ["Pending"] * 3  # no pods yet
    jobs.start(trial_jobs[0])
    wait_for(
        "trial 0 running",
        lambda: (
            [t["state"] for t in cluster.status(NAME)["trials"]]
            == ["Running", "Pending", "Pending"]
        ),
    )
    assert cluster.job(NAME, "train") is None

    jobs.complete(trial_jobs[0], StageResult(stage="train", wer=30.0, best_step=20,
                                             curve=[(10, 31.0), (20, 30.0)]))  # fmt: skip
    jobs.fail(trial_jobs[1], "BackoffLimitExceeded", "Job has reached the specified backoff limit",
              "CUDA out of memory")  # fmt: skip
    more_passes(operator)
    assert cluster.job(NAME, "train") is None, "decided before every trial finished"
    jobs.complete(trial_jobs[2], StageResult(stage="train", wer=27.5, best_step=10,
                                             curve=[(10, 27.5), (20, 29.0)]))  # fmt: skip

    train = jobs.wait_job(NAME, "train")
    command = " ".join(train["spec"]["template"]["spec"]["containers"][0]["command"])
    assert "--learning-rate 1e-05 " in command
    directive = wait_for("the first directive", lambda: cluster.directive(NAME))
    assert (directive.cycle, directive.learning_rate) == (0, 1e-5)
    status = wait_for("the first cycle", lambda: (s := cluster.status(NAME)).get("cycles") and s)
    assert status["cycles"][0]["reason"] == "LR trials: best of 3"
    trials = status["trials"]
    assert [(t["state"], t["chosen"]) for t in trials] == [
        ("Succeeded", False), ("Failed", False), ("Succeeded", True)]  # fmt: skip
    assert trials[0]["curve"] == [{"step": 10, "wer": 31.0}, {"step": 20, "wer": 30.0}]
    assert "BackoffLimitExceeded" in trials[1]["message"]
    assert status["stages"]["trials"]["state"] == "Succeeded"
    (failed,) = events_in_order(cluster, "TrialFailed")
    assert failed["type"] == "Warning"
    (decided,) = events_in_order(cluster, "TrialsDecided")
    assert decided["message"] == "LR 1e-05 chosen: best WER 27.50% (trial 2 of 3, 1 failed)"
    assert sample(operator, "marco_operator_decisions_total", reason="TrialsDecided") == 1


def test_a_rank0_that_refuses_counts_as_an_error_only_after_its_start_up(
    cluster: EmulatedCluster, jobs: JobController
) -> None:
    # Nothing listens on the trainer port: a rank 0 whose torchrun has not started it yet.
    # Its container started just now: no error, however many passes read it. Started past
    # the allowance, each pass's refused read is a `trainer` error.
    run = OperatorRun(cluster, free_port()).start()
    try:
        cluster.apply_adaptation(NAME, make_spec(**ONLY_TRAINING))
        train = jobs.wait_job(NAME, "train")
        jobs.start(train)
        indexed = train["spec"].get("completionMode") == "Indexed"
        rank0 = f"{train['metadata']['name']}-{'0' if indexed else 'pod'}"  # as jobs.start names it
        pod = cluster.path("v1", "pods", rank0) + "/status"

        def started(seconds_ago: float) -> None:
            at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - seconds_ago))
            running = {"name": "trainer", "ready": True, "restartCount": 0,
                       "state": {"running": {"startedAt": at}}}  # fmt: skip
            cluster.kube.merge_patch(pod, {"status": {"containerStatuses": [running]}})

        started(0)
        wait_for("the first directive", lambda: cluster.directive(NAME))
        more_passes(run, 5)  # each reads rank 0 (the follower wakes the loop every interval)
        assert not sample(run, "marco_operator_errors_total", kind="trainer")

        started(TRAINER_STARTUP_SECONDS + 60)
        wait_for(
            "a trainer error",
            lambda: sample(run, "marco_operator_errors_total", kind="trainer"),
        )
    finally:
        run.stop()


@pytest.mark.parametrize("long_polls", [True, False], ids=["long-poll", "older-trainer"])
def test_an_evaluation_is_decided_on_at_once_not_at_the_next_interval(
    cluster: EmulatedCluster, jobs: JobController, long_polls: bool
) -> None:
    # A 20 s interval: no timed pass comes within the test's bounds, so a decision within
    # seconds of an evaluation is the follower's long poll waking the loop (rank0_watch).
    # A trainer that answers at once (older than the long poll) is asked at the interval.
    with ScriptedTrainer(cluster, NAME, long_polls=long_polls) as trainer:
        run = OperatorRun(cluster, trainer.port, interval=20.0).start()
        try:
            cluster.apply_adaptation(NAME, make_spec(**ONLY_TRAINING))
            jobs.start(jobs.wait_job(NAME, "train"))
            wait_for("the first directive", lambda: cluster.directive(NAME))
            wait_for("rank 0 asked", lambda: trainer.requests > 0)
            idle(run)  # the passes that starting the Job set off are over
            wers = [30.0, 29.2, 29.9]
            for wer in wers:
                trainer.evaluate(wer)
            evaluated = time.monotonic()
            if not long_polls:
                # Not before the interval; then from the interval's pass, as before.
                time.sleep(3.0)
                assert cluster.directive(NAME).cycle == 0
                return
            directive = wait_for(
                "the directive of cycle 1",
                lambda: d if (d := cluster.directive(NAME)) and d.cycle == 1 else None,
                timeout=10,
            )
            took = time.monotonic() - evaluated
            assert took < 3.0, f"the decision took {took:.1f}s"
            assert directive.learning_rate == pytest.approx(eq1(wers, 1e-7, 1e-5, 0.5), rel=1e-9)
            assert trainer.long_polled > 0
        finally:
            run.stop()
