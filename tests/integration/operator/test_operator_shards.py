"""Sharded baseline and evaluate under `marco operator` (kopf against kmock): the Job is
Indexed with one pod per shard, each pod leaves its own termination message, and WER0
(status, Eq. 2's first learning rate), finalWer and baselineTestWer are the WERs of the
summed counts, as one pod's would have been; shards that measured nothing fail the stage."""

from __future__ import annotations

import pytest

from marco_contract.formats import StageResult
from marco_contract.scoring import EditCounts

from .harness import EmulatedCluster, JobController, ScriptedTrainer, wait_for
from .test_operator_kopf import NAME, ONLY_TRAINING, eq2, make_spec, phase_is

pytestmark = pytest.mark.timeout(60)

#: (hits, substitutions, deletions, insertions) of each shard: different sizes and rates.
SHARDS = [(40, 6, 2, 1), (3, 2, 0, 4), (18, 1, 1, 0)]


def shard_result(index: int) -> StageResult:
    hits, subs, dels, ins = SHARDS[index]
    words = EditCounts(hits=hits, substitutions=subs, deletions=dels, insertions=ins,
                       reference_words=hits + subs + dels)  # fmt: skip
    return StageResult(stage="evaluate", wer=round(words.rate, 4), family="llm",
                       counts={"evaluated": 10}, shard_index=index, num_shards=len(SHARDS),
                       word_counts=words)  # fmt: skip


def test_a_sharded_baseline_gives_wer0_from_every_shard_s_counts(
    cluster: EmulatedCluster, jobs: JobController, trainer: ScriptedTrainer, operator
) -> None:
    spec = make_spec(
        model={"source": "/data/models/Qwen2-Audio-7B-Instruct"},
        training={"learningRate": {"min": 1e-6, "max": 1e-4}},
        **{**ONLY_TRAINING, "baseline": {"shards": len(SHARDS)}},
    )
    cluster.apply_adaptation(NAME, spec)
    baseline = jobs.wait_job(NAME, "baseline")
    assert (baseline["spec"]["completionMode"], baseline["spec"]["completions"]) == (
        "Indexed",
        len(SHARDS),
    )
    jobs.start(baseline)  # pods <job>-0, -1, -2
    name = baseline["metadata"]["name"]
    for index in range(len(SHARDS)):
        jobs.end_pod(f"{name}-{index}", 0, shard_result(index).to_termination_message())
    jobs.mark_complete(baseline)

    errors = sum(s + d + i for _, s, d, i in SHARDS)
    reference = sum(h + s + d for h, s, d, _ in SHARDS)
    wer0 = round(100 * errors / reference, 4)
    assert wer0 != round(sum(shard_result(i).wer or 0 for i in range(3)) / 3, 4)
    directive = wait_for("the first directive", lambda: cluster.directive(NAME))
    assert directive.learning_rate == pytest.approx(eq2(wer0, 1e-6, 1e-4), rel=1e-9)
    status = wait_for("the first cycle", lambda: (s := cluster.status(NAME)).get("cycles") and s)
    assert status["baselineWer"] == wer0
    assert status["stages"]["baseline"]["wer"] == wer0
    assert status["stages"]["baseline"]["counts"] == {"evaluated": 30}
    assert status["family"] == "llm"


def evaluate_shard(index: int, count: int, counts: tuple[int, int, int, int],
                   reference: tuple[int, int, int, int]) -> StageResult:  # fmt: skip
    def edits(h: int, s: int, d: int, i: int) -> EditCounts:
        return EditCounts(hits=h, substitutions=s, deletions=d, insertions=i,
                          reference_words=h + s + d)  # fmt: skip

    words, ref = edits(*counts), edits(*reference)
    return StageResult(stage="evaluate", wer=round(words.rate, 4),
                       reference_wer=round(ref.rate, 4), counts={"evaluated": 4},
                       shard_index=index, num_shards=count, word_counts=words,
                       reference_word_counts=ref)  # fmt: skip


def test_a_sharded_evaluate_gives_the_final_and_reference_wer_from_every_shard(
    cluster: EmulatedCluster, jobs: JobController, operator
) -> None:
    spec = make_spec(**{**ONLY_TRAINING, "evaluation": {"enabled": True, "shards": 2}})
    cluster.apply_adaptation(NAME, spec)
    jobs.complete(jobs.wait_job(NAME, "train"), StageResult(stage="train", wer=20.0))
    evaluate = jobs.wait_job(NAME, "evaluate")
    assert evaluate["spec"]["completions"] == 2
    jobs.start(evaluate)
    name = evaluate["metadata"]["name"]
    shards = [((30, 3, 1, 2), (25, 8, 1, 0)), ((9, 1, 0, 0), (6, 4, 0, 3))]
    for index, (counts, reference) in enumerate(shards):
        message = evaluate_shard(index, 2, counts, reference).to_termination_message()
        jobs.end_pod(f"{name}-{index}", 0, message)
    jobs.mark_complete(evaluate)

    status = wait_for("phase Succeeded", phase_is(cluster, "Succeeded"))
    final = round(100 * (3 + 1 + 2 + 1) / (34 + 10), 4)
    reference = round(100 * (8 + 1 + 4 + 3) / (34 + 10), 4)
    assert (status["finalWer"], status["baselineTestWer"]) == (final, reference)
    assert status["stages"]["evaluate"]["counts"] == {"evaluated": 8}


def test_sharded_evaluate_that_decoded_nothing_fails_the_stage(
    cluster: EmulatedCluster, jobs: JobController, operator
) -> None:
    spec = make_spec(**{**ONLY_TRAINING, "evaluation": {"enabled": True, "shards": 2}})
    cluster.apply_adaptation(NAME, spec)
    jobs.complete(jobs.wait_job(NAME, "train"), StageResult(stage="train", wer=20.0))
    evaluate = jobs.wait_job(NAME, "evaluate")
    jobs.start(evaluate)
    name = evaluate["metadata"]["name"]
    for index in range(2):
        nothing = StageResult(
            stage="evaluate",
            wer=0.0,
            counts={"evaluated": 0, "skipped": 3},
            shard_index=index,
            num_shards=2,
            word_counts=EditCounts(),
        )
        jobs.end_pod(f"{name}-{index}", 0, nothing.to_termination_message())
    jobs.mark_complete(evaluate)

    status = wait_for("phase Failed", phase_is(cluster, "Failed"))
    assert status["stages"]["evaluate"]["state"] == "Failed"
    assert "ShardsFailed: no utterance could be transcribed" in status["message"]
    assert status.get("finalWer") is None
