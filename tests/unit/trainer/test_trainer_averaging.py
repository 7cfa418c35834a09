"""Checkpoint averaging's pure parts: which evaluations are kept, their mean, and whether the
mean or the single best checkpoint is exported."""

from __future__ import annotations

import pytest
import torch

from marco_contract.formats import Evaluation
from marco_trainer.train.averaging import (
    average_is_kept,
    average_weights,
    kept_dir,
    kept_on_disk,
    kept_steps,
)


def evaluation(step: int, wer: float) -> Evaluation:
    return Evaluation(step=step, cycle=0, lr=1e-5, wer=wer, time=0.0)


def test_the_lowest_wers_are_kept_earliest_first_on_a_tie_and_returned_in_step_order():
    history = [evaluation(10, 40.0), evaluation(20, 35.0), evaluation(30, 35.0),
               evaluation(40, 38.0), evaluation(50, 50.0)]  # fmt: skip
    assert kept_steps(history, 2) == [20, 30]
    assert kept_steps(history, 3) == [20, 30, 40]
    # A tie at the cut: the earlier of 20 and 30 stays.
    assert kept_steps(history, 1) == [20]
    assert kept_steps(history, 10) == [10, 20, 30, 40, 50]


def test_a_step_evaluated_again_after_a_resume_counts_once_with_its_newest_wer():
    history = [evaluation(10, 30.0), evaluation(20, 31.0), evaluation(20, 45.0),
               evaluation(30, 32.0)]  # fmt: skip
    assert kept_steps(history, 2) == [10, 30]


def test_the_mean_is_element_wise_in_the_tensors_own_dtype_and_integer_buffers_are_kept():
    generator = torch.Generator().manual_seed(0)
    states = [
        {
            "w": torch.randn(3, 4, generator=generator),
            "h": torch.randn(5, generator=generator).to(torch.bfloat16),
            "count": torch.tensor([7 + i]),
        }
        for i in range(3)
    ]
    averaged = average_weights(iter(states))  # one at a time, as the loop reads them
    expected_w = (states[0]["w"].double() + states[1]["w"].double() + states[2]["w"].double()) / 3
    assert averaged["w"].dtype == torch.float32
    torch.testing.assert_close(averaged["w"], expected_w.float())
    expected_h = sum(s["h"].double() for s in states) / 3
    assert averaged["h"].dtype == torch.bfloat16
    torch.testing.assert_close(averaged["h"], expected_h.to(torch.bfloat16))
    assert averaged["count"].tolist() == [7]


def test_states_that_do_not_match_are_refused_naming_the_weight():
    one = {"a": torch.zeros(2), "b": torch.zeros(2)}
    with pytest.raises(ValueError, match="differ in weights: \\['b'\\]"):
        average_weights([one, {"a": torch.zeros(2)}])
    with pytest.raises(ValueError, match="differ in a's shape"):
        average_weights([one, {"a": torch.zeros(3), "b": torch.zeros(2)}])
    with pytest.raises(ValueError, match="no checkpoints"):
        average_weights([])


def test_only_step_folders_count_as_kept(tmp_path):
    for step in (20, 100):
        kept_dir(tmp_path, step).mkdir(parents=True)
    (tmp_path / "kept" / "step-x").mkdir()
    (tmp_path / "kept" / "step-30").write_text("not a folder")
    assert kept_on_disk(tmp_path) == {20: kept_dir(tmp_path, 20), 100: kept_dir(tmp_path, 100)}


# -- the mean against the single best, on the same validation utterances ------------------
# Four utterances of ten words; the best checkpoint makes 2, 3, 1 and 4 errors (25 %).
BEST = [2, 3, 1, 4]
WORDS = [10, 10, 10, 10]


def test_a_mean_consistently_worse_than_the_best_is_not_exported():
    # One more error on two utterances, none fewer anywhere: +5 points. The paired standard
    # error of that difference, by hand: differences d = 1, 0, 1, 0 (Σd = 2 of Σw = 40), so
    # d − (2/40)·w = ±0.5 each, Σ² = 1, and 100·√(4/3 · 1) / 40 = 2.89 points: 5 exceeds it.
    kept, se = average_is_kept(BEST, [3, 3, 2, 4], WORDS)
    assert se == pytest.approx(100 * (4 / 3) ** 0.5 / 40)
    assert kept is False


def test_a_mean_worse_within_the_noise_of_the_difference_is_not_exported_either():
    # +2.5 points, but the utterances disagree (+2 on one, −1 on another): d = 2, −1, 0, 0,
    # d − (1/40)·w = 1.75, −1.25, −0.25, −0.25, Σ² = 4.75, s.e. = 100·√(4/3 · 4.75)/40 = 6.29.
    # The rule before 2026-12-05 exported it (2.5 < 6.29); on the benchmark such means lost.
    kept, se = average_is_kept(BEST, [4, 2, 1, 4], WORDS)
    assert se == pytest.approx(100 * (4 / 3 * 4.75) ** 0.5 / 40)
    assert kept is False


def test_a_mean_as_good_or_better_is_exported():
    assert average_is_kept(BEST, BEST, WORDS)[0] is True
    assert average_is_kept(BEST, [1, 3, 1, 4], WORDS)[0] is True
    # Worse on one utterance, better on another by as much: no worse overall.
    assert average_is_kept(BEST, [3, 2, 1, 4], WORDS)[0] is True


def test_with_one_utterance_there_is_no_standard_error_and_any_excess_rejects_the_mean():
    assert average_is_kept([2], [3], [10]) == (False, None)
    assert average_is_kept([2], [2], [10]) == (True, None)


def test_counts_that_do_not_line_up_are_refused():
    with pytest.raises(ValueError, match="3 best, 4 averaged error counts for 4 utterances"):
        average_is_kept([1, 2, 3], [1, 2, 3, 4], WORDS)
    with pytest.raises(ValueError, match="no reference words"):
        average_is_kept([0, 0], [0, 0], [0, 0])
