"""Checkpoint averaging's pure parts: which evaluations are kept, and their mean."""

from __future__ import annotations

import pytest
import torch

from marco_contract.formats import Evaluation
from marco_trainer.train.averaging import average_weights, kept_dir, kept_on_disk, kept_steps


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
