"""A sharded baseline under `marco operator` (kopf against kmock): the Job is Indexed with
one pod per shard, each pod leaves its own termination message, and WER0 (status, Eq. 2's
first learning rate) is the WER of the summed counts, as one pod's would have been."""

from __future__ import annotations

import pytest

from marco_contract.formats import StageResult
from marco_contract.scoring import EditCounts

from .harness import EmulatedCluster, JobController, ScriptedTrainer, wait_for
from .test_operator_kopf import NAME, ONLY_TRAINING, eq2, make_spec

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
