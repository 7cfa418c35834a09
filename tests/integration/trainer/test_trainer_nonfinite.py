"""A non-finite loss never poisons the run: skipped, counted, rolled back, still exits 0."""

from __future__ import annotations

import math

import pytest
from safetensors.torch import load_file

from marco_contract.formats import StageResult
from marco_trainer.cli import main
from tests.trainer_runs import read_history, train_args

pytestmark = pytest.mark.slow


def test_exploding_learning_rate_skips_steps_and_rolls_back(
    tmp_path, tiny_whisper, speech_manifest
):
    out = tmp_path / "run"
    # An absurd LR: one AdamW step moves weights to ~1e30, the next forward overflows.
    args = train_args(
        tiny_whisper,
        speech_manifest,
        out,
        learning_rate=1e30,
        max_steps=8,
        eval_every=4,
        max_new_tokens=4,
        max_consecutive_nonfinite=3,
    )
    assert main(args) == 0

    history = read_history(out)
    # Steps 1 and 5 are finite (from the initial, then the restored weights);
    # 2-4 and 6-8 are not: after three in a row the weights are rolled back.
    assert [e.skipped_steps for e in history.evaluations] == [3, 3]
    assert all(math.isfinite(e.loss) for e in history.evaluations)
    result = StageResult.model_validate_json((out / "result.json").read_text())
    assert result.ok and result.steps == 8
    assert result.counts["nonfinite_steps"] == 6 and result.counts["rollbacks"] == 2
    exported = load_file(out / "export" / "model.safetensors")
    assert all(bool(t.isfinite().all()) for t in exported.values())
    initial = load_file(tiny_whisper / "model.safetensors")
    assert all(bool((exported[k] == initial[k]).all()) for k in initial)
