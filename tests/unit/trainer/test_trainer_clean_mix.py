"""A share of clean source in every batch (training.cleanSourceShare, issue 16).

Examples 0..n_aug-1 stand for augmented copies, n_aug.. for the clean source.
The expected share is the option itself; the tolerance is binomial (4 standard
deviations of a share of n independent draws).
"""

from __future__ import annotations

from collections import Counter

import pytest

from marco_trainer.data import CleanMix, MicroBatchStream, StreamPosition, bucketed_batches


def clean_share_over(batches: list[list[int]], first_clean: int) -> tuple[float, int]:
    drawn = [i for batch in batches for i in batch]
    return sum(i >= first_clean for i in drawn) / len(drawn), len(drawn)


@pytest.mark.parametrize("share", [0.1, 0.25, 0.5, 0.8])
def test_the_clean_share_over_many_batches_is_the_option(share):
    # 300 augmented, 100 clean: concatenation would give 0.25 whatever the option.
    durations = [1.0 + (i % 13) * 0.3 for i in range(400)]
    stream = MicroBatchStream(durations, batch_size=8, seed=5, mix=CleanMix(300, share))
    observed, n = clean_share_over(stream.take(1000), first_clean=300)
    assert n == 8000
    assert abs(observed - share) < 4 * (share * (1 - share) / n) ** 0.5


def test_each_batch_holds_about_the_share_not_whole_batches_of_one_kind():
    durations = [2.0] * 400  # equal lengths: sorting does not regroup the draws
    stream = MicroBatchStream(durations, batch_size=8, seed=1, mix=CleanMix(300, 0.5))
    per_batch = Counter(sum(i >= 300 for i in batch) for batch in stream.take(400))
    # Binomial(8, 0.5): 0 or 8 clean in a batch has probability 2/256 (about 3 of 400).
    assert per_batch[0] + per_batch[8] < 15
    assert sum(per_batch[k] for k in range(2, 7)) > 300


def test_share_zero_and_one_draw_from_one_pool_only():
    durations = [1.0] * 50
    none = bucketed_batches(durations, 4, seed=0, epoch=0, mix=CleanMix(30, 0.0))
    only = bucketed_batches(durations, 4, seed=0, epoch=0, mix=CleanMix(30, 1.0))
    assert all(i < 30 for batch in none for i in batch)
    assert all(i >= 30 for batch in only for i in batch)


def test_a_pool_is_walked_without_repeats_until_it_runs_out():
    # 200 augmented, 200 clean, share 0.3: about 120 clean draws an epoch, fewer than 200.
    durations = [1.0] * 400
    epoch = bucketed_batches(durations, 8, seed=3, epoch=0, mix=CleanMix(200, 0.3))
    clean = [i for batch in epoch for i in batch if i >= 200]
    assert len(clean) == len(set(clean))
    # The epoch has the usual number of utterances.
    assert sum(len(batch) for batch in epoch) == 400


def test_the_mixed_stream_is_deterministic_and_resumes_at_its_position():
    durations = [1.0 + i % 5 for i in range(60)]
    mix = CleanMix(40, 0.4)
    stream = MicroBatchStream(durations, batch_size=4, seed=2, mix=mix)
    stream.take(20)  # crosses into epoch 1 (15 batches an epoch)
    saved = StreamPosition(stream.position.epoch, stream.position.offset)
    rest = stream.take(10)
    again = MicroBatchStream(durations, batch_size=4, seed=2, mix=mix)
    again.seek(saved)
    assert again.take(10) == rest


def test_without_a_mix_the_epoch_is_the_one_main_drew_before_the_option():
    # The demo's numbers depend on it. The literal is main's output at 62c7c3c.
    durations = [1.0 + i % 7 for i in range(20)]
    assert bucketed_batches(durations, 4, 3, 1, buckets_per_chunk=2) == [
        [14, 7, 1, 15], [9, 16, 18, 12], [17, 19, 13, 6], [10, 4, 11, 5], [0, 8, 2, 3]
    ]  # fmt: skip


def test_a_share_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match=r"clean source share 1\.5"):
        CleanMix(10, 1.5)


def test_a_share_with_an_empty_pool_names_the_missing_pool():
    with pytest.raises(ValueError, match="no clean source utterances"):
        bucketed_batches([1.0] * 10, 2, 0, 0, mix=CleanMix(10, 0.5))
