"""The merge of a sharded baseline/evaluate's results (marco_contract.evaluation).

Expectations come from jiwer run directly on the concatenated corpus, not from the
code under test: the merged counts must be jiwer's counts of the whole set, and the
merged WER its (S + D + I) / reference words.
"""

from __future__ import annotations

import jiwer
import pytest
from pydantic import ValidationError

from marco_contract.evaluation import merge_evaluation_results, shard_file
from marco_contract.formats import StageResult
from marco_contract.scoring import EditCounts

# Normalised pairs (reference, hypothesis) with substitutions, deletions and insertions
# in different utterances, and utterances of different lengths: averaging the shards'
# rates would give another number than the corpus rate.
CORPUS = [
    ("the cat sat on the mat", "the cat sat on a mat"),
    ("hello", "hello there"),
    ("call me back tomorrow morning please", "call me tomorrow please"),
    ("one two three", "one two three"),
    ("a", "b c"),
    ("good night and good luck", "good night good luck to you"),
    ("seven", "seven"),
]


def jiwer_counts(pairs) -> EditCounts:
    out = jiwer.process_words([r for r, _ in pairs], [h for _, h in pairs])
    return EditCounts(
        hits=out.hits,
        substitutions=out.substitutions,
        deletions=out.deletions,
        insertions=out.insertions,
        reference_words=sum(len(r.split()) for r, _ in pairs),
    )


def shard_results(count: int, pairs=CORPUS, **extra) -> list[StageResult]:
    """What each of `count` shards reports: utterance i in shard i mod count."""
    results = []
    for index in range(count):
        mine = [pair for i, pair in enumerate(pairs) if i % count == index]
        counts = jiwer_counts(mine) if mine else EditCounts()
        results.append(
            StageResult(
                stage="evaluate",
                wer=round(counts.rate, 4),
                counts={"evaluated": len(mine), "skipped": 0},
                shard_index=index,
                num_shards=count,
                word_counts=counts,
                **extra,
            )
        )
    return results


@pytest.mark.parametrize("count", [1, 2, 3, 7, 9])
def test_merged_counts_and_wer_are_those_of_the_whole_corpus(count):
    merged = merge_evaluation_results(shard_results(count))
    whole = jiwer.process_words([r for r, _ in CORPUS], [h for _, h in CORPUS])
    assert merged.word_counts is not None
    assert (
        merged.word_counts.hits,
        merged.word_counts.substitutions,
        merged.word_counts.deletions,
        merged.word_counts.insertions,
    ) == (whole.hits, whole.substitutions, whole.deletions, whole.insertions)
    whole_wer = jiwer.wer([r for r, _ in CORPUS], [h for _, h in CORPUS])
    assert merged.wer == pytest.approx(100 * whole_wer, abs=1e-4)
    assert merged.counts == {"evaluated": len(CORPUS), "skipped": 0}
    assert merged.ok and merged.num_shards == count


def test_every_sharding_gives_the_same_float():
    """The rate comes from integer sums: the same bits however the set was cut."""
    wers = {merge_evaluation_results(shard_results(count)).wer for count in (1, 2, 3, 4, 7)}
    assert len(wers) == 1


def test_the_merge_is_not_the_mean_of_the_shards_rates():
    shards = shard_results(3)
    mean = sum(s.wer or 0 for s in shards) / len(shards)
    assert merge_evaluation_results(shards).wer != pytest.approx(mean, abs=1e-3)


def test_reference_and_character_counts_merge_too():
    words = jiwer_counts(CORPUS)
    shards = [
        s.model_copy(
            update={
                "reference_word_counts": s.word_counts,
                "char_counts": s.word_counts,
                "cer": s.wer,
            }
        )
        for s in shard_results(3)
    ]
    merged = merge_evaluation_results(shards)
    assert merged.reference_word_counts == words == merged.char_counts
    assert (
        merged.reference_wer == merged.cer == round(100 * words.errors / words.reference_words, 4)
    )


def test_results_without_reference_or_cer_merge_without_them():
    merged = merge_evaluation_results(shard_results(3))
    assert (merged.reference_wer, merged.reference_word_counts, merged.cer) == (None, None, None)


def test_order_of_the_results_does_not_matter():
    shards = shard_results(3)
    assert merge_evaluation_results(shards[::-1]) == merge_evaluation_results(shards)


def test_a_missing_shard_is_named():
    shards = shard_results(3)
    with pytest.raises(ValueError, match=r"no result from shard\(s\) \[1\]"):
        merge_evaluation_results([shards[0], shards[2]])


def test_a_shard_twice_is_refused():
    shards = shard_results(3)
    with pytest.raises(ValueError, match="once each"):
        merge_evaluation_results([shards[0], shards[1], shards[1]])


def test_shards_of_two_shardings_are_refused():
    with pytest.raises(ValueError, match=r"num_shards \[2, 3\]"):
        merge_evaluation_results([*shard_results(3)[:2], shard_results(2)[1]])


def test_a_result_without_counts_is_named():
    shards = shard_results(2)
    shards[1] = shards[1].model_copy(update={"word_counts": None})
    with pytest.raises(ValueError, match=r"shard\(s\) \[1\] carries no word_counts"):
        merge_evaluation_results(shards)


def test_no_utterance_decoded_anywhere_is_no_rate_and_not_ok():
    empty = [
        StageResult(
            stage="evaluate",
            wer=0.0,
            counts={"evaluated": 0, "skipped": 2},
            shard_index=i,
            num_shards=2,
            word_counts=EditCounts(),
        )
        for i in range(2)
    ]
    merged = merge_evaluation_results(empty)
    assert merged.wer is None and not merged.ok
    assert merged.message is not None and "no utterance could be transcribed" in merged.message
    assert merged.counts == {"evaluated": 0, "skipped": 4}


def test_one_shard_with_nothing_decoded_does_not_fail_the_others():
    shards = shard_results(3, pairs=CORPUS[:2])  # shard 2 holds no utterance
    assert shards[2].counts["evaluated"] == 0
    merged = merge_evaluation_results(shards)
    assert merged.ok and merged.word_counts == jiwer_counts(CORPUS[:2])


def test_edit_counts_must_align_with_the_reference():
    with pytest.raises(ValidationError, match="reference_words is 5, but hits"):
        EditCounts(hits=2, substitutions=1, deletions=1, reference_words=5)


def test_edit_counts_survive_the_termination_message():
    (result,) = shard_results(1)
    back = StageResult.model_validate_json(result.to_termination_message())
    assert back.word_counts == result.word_counts


def test_shard_files_keep_the_plain_name_unsharded():
    assert shard_file("report.json", 0, 1) == "report.json"
    assert shard_file("report.json", 2, 3) == "report-00002-of-00003.json"


def test_the_model_dimensions_of_a_shard_reach_the_merged_result():
    # The memory estimate reads them from the baseline's result: a shard that held no
    # utterance loaded no model and reports none, the others report the loaded model's.
    from marco_contract.memory import model_dims
    from tests.unit.test_memory_estimate import WHISPER_LARGE_V3

    dims = model_dims(WHISPER_LARGE_V3)
    results = shard_results(3, pairs=CORPUS[:2])
    results = [
        r.model_copy(update={"model": dims if i < 2 else None}) for i, r in enumerate(results)
    ]
    merged = merge_evaluation_results(results)
    assert merged.model == dims
    assert StageResult.model_validate_json(merged.to_termination_message()).model == dims


def test_the_wer_standard_error_with_equal_lengths_is_that_of_the_mean_rate():
    import statistics

    from marco_contract.scoring import wer_standard_error

    errors = [0, 3, 1, 5, 2, 0, 4]
    rates = [e / 10 for e in errors]  # every utterance 10 words
    expected = 100 * statistics.stdev(rates) / len(rates) ** 0.5
    assert wer_standard_error(errors, [10] * len(errors)) == pytest.approx(expected)


def test_the_wer_standard_error_matches_a_bootstrap_over_utterances():
    import numpy as np

    from marco_contract.scoring import wer_standard_error

    rng = np.random.default_rng(0)
    words = rng.integers(3, 25, size=120)
    errors = rng.binomial(words, 0.3) + rng.integers(0, 3, size=120)  # insertions too
    draws = rng.integers(0, 120, size=(20_000, 120))
    boot = 100 * errors[draws].sum(axis=1) / words[draws].sum(axis=1)
    assert wer_standard_error(list(errors), list(words)) == pytest.approx(boot.std(), rel=0.05)


def test_the_wer_standard_error_needs_two_utterances_and_matching_counts():
    from marco_contract.scoring import wer_standard_error

    assert wer_standard_error([3], [10]) is None
    assert wer_standard_error([0, 0], [0, 0]) is None
    with pytest.raises(ValueError, match="2 error counts for 3 word counts"):
        wer_standard_error([1, 2], [3, 4, 5])


def test_the_change_standard_error_is_the_paired_bootstrap_and_below_the_unpaired():
    import numpy as np

    from marco_contract.scoring import wer_change_standard_error, wer_standard_error

    rng = np.random.default_rng(1)
    words = rng.integers(3, 25, size=100)
    before = rng.binomial(words, 0.3)
    # The next checkpoint: most utterances as hard as before, a few a word better or worse.
    after = np.maximum(before + rng.choice([-1, 0, 0, 0, 1], size=100), 0)
    draws = rng.integers(0, 100, size=(20_000, 100))
    boot = 100 * (after[draws].sum(axis=1) - before[draws].sum(axis=1)) / words[draws].sum(axis=1)
    got = wer_change_standard_error(list(before), list(after), list(words))
    assert got == pytest.approx(boot.std(), rel=0.05)
    # Paired, far below what two independent draws of the subset would differ by.
    unpaired = np.hypot(wer_standard_error(list(before), list(words)),
                        wer_standard_error(list(after), list(words)))  # fmt: skip
    assert got < unpaired / 2
    assert wer_change_standard_error([2, 3], [2, 3], [10, 10]) == 0.0  # nothing changed
    with pytest.raises(ValueError, match="2 error counts before, 3 after"):
        wer_change_standard_error([1, 2], [1, 2, 3], [5, 5, 5])
