"""Checkpoint averaging through the trainer's CLI: the export is the mean of the kept
evaluations' weights, the best-scored ones, and its validation WER is the averaged model's."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.tiny_models import TEST_SENTENCES, build_tiny_whisper
from tests.trainer_runs import read_history, run_trainer, train_args, train_in_process

pytestmark = pytest.mark.slow


def test_the_export_is_the_mean_of_the_best_scored_checkpoints(tmp_path, speech_manifest):
    model = build_tiny_whisper(tmp_path / "model", TEST_SENTENCES)
    out = tmp_path / "run"
    code = train_in_process(
        *train_args(
            model, speech_manifest, out, learning_rate=1e-3, max_steps=4, eval_every=1,
            max_new_tokens=6, average_checkpoints=2,
        )
    )  # fmt: skip
    assert code == 0

    evaluations = read_history(out).evaluations
    assert [e.step for e in evaluations] == [1, 2, 3, 4]
    # The two lowest validation WERs, the earlier step first on a tie.
    ranked = sorted(evaluations, key=lambda e: (e.wer, e.step))
    chosen = sorted(e.step for e in ranked[:2])
    kept = sorted(p.name for p in (out / "checkpoints" / "kept").iterdir())
    assert kept == [f"step-{s:08d}" for s in chosen]

    first, second = (
        load_file(out / "checkpoints" / "kept" / k / "model.safetensors") for k in kept
    )
    exported = load_file(out / "export" / "model.safetensors")
    assert exported.keys() == first.keys()
    moved = 0
    for name, tensor in exported.items():
        mean = ((first[name].double() + second[name].double()) / 2).to(tensor.dtype)
        torch.testing.assert_close(tensor, mean, rtol=0, atol=1e-7)
        moved += not first[name].equal(second[name])
    assert moved > 0, "the two kept checkpoints are the same weights: nothing was averaged"

    # The averaged WER is what the averaged weights score on the same utterances, measured
    # again here by the evaluate stage on the export.
    averaged = json.loads((out / "checkpoints" / "averaged" / "averaged.json").read_text())
    assert averaged["steps"] == chosen
    scored = run_trainer(
        "evaluate", "--model", str(out / "export"), "--manifest", str(speech_manifest),
        "--output-dir", str(tmp_path / "eval"), "--max-new-tokens", "6",
    )  # fmt: skip
    assert scored.returncode == 0, scored.stderr[-3000:]
    wer = json.loads((tmp_path / "eval" / "result.json").read_text())["wer"]
    assert averaged["wer"] == pytest.approx(wer, abs=1e-6)
    # Its standard error, from the utterances' own counts in the evaluate stage's report:
    # the ratio estimator's n/(n-1)·Σ(e - R·w)² / (Σw)², written out again here.
    report = json.loads((tmp_path / "eval" / "report.json").read_text())["utterances"]
    errors = [u["word_errors"] for u in report]
    words = [u["reference_words"] for u in report]
    rate, n = sum(errors) / sum(words), len(report)
    spread = sum((e - rate * w) ** 2 for e, w in zip(errors, words, strict=True))
    assert averaged["wer_se"] == pytest.approx(100 * (n / (n - 1) * spread) ** 0.5 / sum(words))
    assert all(e.wer_se is not None for e in evaluations)
    # The change since the previous evaluation, on the same utterances: none for the first.
    changes = [e.wer_change_se for e in evaluations]
    assert changes[0] is None and all(c is not None and c >= 0 for c in changes[1:])
    card = (out / "export" / "README.md").read_text()
    assert f"the mean of the checkpoints of steps {chosen[0]}, {chosen[1]}" in card
    result = json.loads((out / "result.json").read_text())
    assert f"exported the mean of steps {chosen}" in result["message"]


def test_a_trial_without_export_keeps_no_extra_checkpoints(tmp_path, tiny_whisper, speech_manifest):
    out = tmp_path / "trial"
    code = train_in_process(
        *train_args(
            tiny_whisper, speech_manifest, out, learning_rate=1e-3, max_steps=2, eval_every=1,
            max_new_tokens=4, average_checkpoints=2, no_export=True,
        )
    )  # fmt: skip
    assert code == 0
    folders = {p.name for p in (out / "checkpoints").iterdir()}
    assert "best" in folders
    assert not folders & {"kept", "averaged"}
