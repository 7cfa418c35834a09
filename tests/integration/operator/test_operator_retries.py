"""A Job's retry, as the operator sees it: every try leaves its pod, and the emulator lists
them as the API server does (by name, the Job controller's random suffix), so the pod the
operator reads must be chosen by what it is (the try that succeeded, the live rank 0), not
by where it comes. And a decision whose Event the API server fails to store is said again.
"""

from __future__ import annotations

import pytest

from marco_contract.formats import StageResult

from .harness import EmulatedCluster, JobController, OperatorRun, ScriptedTrainer, wait_for
from .test_operator_kopf import NAME, ONLY_TRAINING, eq1, eq2, make_spec, run_cycle, sample

pytestmark = pytest.mark.timeout(60)


def restarted(operator: OperatorRun, trainer: ScriptedTrainer) -> OperatorRun:
    """The operator stopped and started again: its caches rebuilt from a listing."""
    operator.stop()
    return OperatorRun(operator.cluster, trainer_port=trainer.port, interval=0.3).start()


def test_a_baseline_retried_after_a_failure_gives_its_wer(
    cluster: EmulatedCluster, jobs: JobController, trainer: ScriptedTrainer, operator: OperatorRun
) -> None:
    """The first try fails, the Job's retry writes WER 55.0: Eq. 2 starts from it."""
    spec = make_spec(
        model={"source": "/data/models/Qwen2-Audio-7B-Instruct"},
        training={"learningRate": {"min": 1e-6, "max": 1e-4}},
        **{k: v for k, v in ONLY_TRAINING.items() if k != "baseline"},
    )
    cluster.apply_adaptation(NAME, spec)
    job = jobs.wait_job(NAME, "baseline")
    operator.stop()  # the tries come and go while no operator runs: it lists them after
    # The failed try sorts after its retry by name: a listing puts it last.
    failed = "telephony-baseline-x7k2q"
    jobs.create_pod(job, None, failed, created="2025-01-01T00:00:00Z")
    jobs.end_pod(failed, 1, "Traceback (most recent call last): ... CUDA error")
    retry = "telephony-baseline-b4mzp"
    jobs.create_pod(job, None, retry, created="2025-01-01T00:01:00Z")
    jobs.end_pod(retry, 0, StageResult(stage="baseline", wer=55.0).to_termination_message())
    jobs.mark_complete(job, failed=1)
    run = OperatorRun(cluster, trainer_port=trainer.port, interval=0.3).start()
    try:
        status = wait_for(
            "the train stage's start, or its refusal",
            lambda: (s := cluster.status(NAME)).get("phase") in ("Training", "Invalid") and s,
        )
        assert status["baselineWer"] == 55.0, status
        assert status["phase"] == "Training", status.get("message")
        directive = wait_for("the first directive", lambda: cluster.directive(NAME))
        assert directive.learning_rate == pytest.approx(eq2(55.0, 1e-6, 1e-4), rel=1e-9)
    finally:
        run.stop()


def test_a_replaced_rank_0_steers_the_cycles(
    cluster: EmulatedCluster, jobs: JobController, trainer: ScriptedTrainer, operator: OperatorRun
) -> None:
    """Rank 0 of the Indexed train Job fails and the Job controller replaces it; the new pod
    resumes from the checkpoint (its history restarts there) and closes cycle 0."""
    cluster.apply_adaptation(NAME, make_spec(**ONLY_TRAINING, resources={"nodes": 2}))
    job = jobs.wait_job(NAME, "train")
    assert job["spec"]["completionMode"] == "Indexed"
    jobs.start(job, suffix="-xq7wz")
    wait_for("the first directive", lambda: cluster.directive(NAME))
    trainer.evaluate(30.0)
    trainer.evaluate(29.0)
    jobs.end_pod("telephony-train-0-xq7wz", 1, "NCCL error: unhandled system error")
    # The replacement sorts before the failed pod by name; the checkpoint held step 10.
    jobs.create_pod(job, 0, "telephony-train-0-bq2mn", created="2999-01-01T00:00:00Z")
    del trainer.evaluations[1:]
    run = restarted(operator, trainer)
    try:
        directive = run_cycle(trainer, cluster, [29.5, 29.8])
        assert directive.learning_rate == pytest.approx(eq1([30.0, 29.5, 29.8], 1e-7, 1e-5, 0.5))
        status = wait_for(
            "cycle 1 in the status", lambda: (s := cluster.status(NAME))["cycle"] == 1 and s
        )
        assert status["cycles"][0]["wers"] == [30.0, 29.5, 29.8]
    finally:
        run.stop()


def test_a_decision_whose_event_failed_is_said_and_counted_once(
    cluster: EmulatedCluster, jobs: JobController, trainer: ScriptedTrainer, operator: OperatorRun
) -> None:
    """The directive of cycle 1 is written, then the API server answers 500 to its Event: the
    next pass says it, and the decision counts once."""
    cluster.apply_adaptation(NAME, make_spec(**ONLY_TRAINING))
    jobs.start(jobs.wait_job(NAME, "train"))
    wait_for("the first directive", lambda: cluster.directive(NAME))
    cluster.fail_events("LearningRateChanged", times=1)
    run_cycle(trainer, cluster, [30.0, 29.2, 29.9])
    wait_for(
        "the LearningRateChanged Event",
        lambda: cluster.event_times("Normal", "LearningRateChanged"),
    )
    wait_for("cycle 1 in the status", lambda: cluster.status(NAME).get("cycle") == 1)
    assert cluster.event_refusals["LearningRateChanged"][1] == 0, "no POST was refused"
    wait_for(
        "the decision counted",
        lambda: sample(operator, "marco_operator_decisions_total", reason="LearningRateChanged"),
    )
    # Passes after it say and count it no more (evaluations wake them: while rank 0 is
    # followed, no timed pass comes).
    target = (sample(operator, "marco_operator_reconciles_total", result="success") or 0) + 2
    for wer in (29.0, 28.5):
        trainer.evaluate(wer)
        wait_for(f"WER {wer} in the status", lambda w=wer: cluster.status(NAME).get("wer") == w)
    wait_for(
        "two more passes",
        lambda: (
            (sample(operator, "marco_operator_reconciles_total", result="success") or 0) >= target
        ),
    )
    assert len(cluster.event_times("Normal", "LearningRateChanged")) == 1
    assert sample(operator, "marco_operator_decisions_total", reason="LearningRateChanged") == 1
