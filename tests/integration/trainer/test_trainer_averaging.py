"""Checkpoint averaging through the trainer's CLI: the mean of the kept evaluations' weights,
the best-scored ones, scored on the validation utterances and exported unless it reads
worse than the single best checkpoint by more than the paired noise of that difference."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.tiny_models import TEST_SENTENCES, build_tiny_whisper
from tests.trainer_runs import read_history, run_trainer, train_args, train_in_process

pytestmark = pytest.mark.slow


def evaluate_stage(model, manifest, out) -> tuple[float, list[int], list[int]]:
    """The evaluate stage's WER of ``model`` and its per-utterance error and word counts."""
    scored = run_trainer(
        "evaluate", "--model", str(model), "--manifest", str(manifest),
        "--output-dir", str(out), "--max-new-tokens", "6",
    )  # fmt: skip
    assert scored.returncode == 0, scored.stderr[-3000:]
    wer = json.loads((out / "result.json").read_text())["wer"]
    report = json.loads((out / "report.json").read_text())["utterances"]
    return wer, [u["word_errors"] for u in report], [u["reference_words"] for u in report]


def ratio_standard_error(values: list[int], words: list[int]) -> float:
    """The ratio estimator's standard error in percent, n/(n-1)·Σ(v - R·w)² / (Σw)²,
    written out again here."""
    rate, n = sum(values) / sum(words), len(values)
    spread = sum((v - rate * w) ** 2 for v, w in zip(values, words, strict=True))
    return 100 * (n / (n - 1) * spread) ** 0.5 / sum(words)


# Two runs of the tiny Whisper: four steps at a low rate, where no evaluation reads better
# than another and the mean is exported; and sixty at a high one, where step 60 reads
# 25 % and steps 20 and 40 near 100 %, so their mean reads far worse than step 60 alone.
RUNS = {
    "mean": {"learning_rate": 1e-3, "max_steps": 4, "eval_every": 1, "average_checkpoints": 2},
    "best": {
        "learning_rate": 1e-2, "max_steps": 60, "eval_every": 20, "average_checkpoints": 3,
        "per_device_batch_size": 2,
    },
}  # fmt: skip


@pytest.mark.parametrize("exported", ["mean", "best"])
def test_the_export_is_the_mean_of_the_best_scored_checkpoints_unless_it_reads_worse(
    tmp_path, speech_manifest, exported
):
    model = build_tiny_whisper(tmp_path / "model", TEST_SENTENCES)
    out = tmp_path / "run"
    flags = RUNS[exported]
    code = train_in_process(*train_args(model, speech_manifest, out, max_new_tokens=6, **flags))
    assert code == 0

    evaluations = read_history(out).evaluations
    every, count = flags["eval_every"], flags["average_checkpoints"]
    assert [e.step for e in evaluations] == list(range(every, flags["max_steps"] + 1, every))
    # The lowest validation WERs, the earlier step first on a tie.
    ranked = sorted(evaluations, key=lambda e: (e.wer, e.step))
    chosen = sorted(e.step for e in ranked[:count])
    best_step = ranked[0].step
    kept = sorted(p.name for p in (out / "checkpoints" / "kept").iterdir())
    assert kept == [f"step-{s:08d}" for s in chosen]

    states = [load_file(out / "checkpoints" / "kept" / k / "model.safetensors") for k in kept]
    averaged_weights = load_file(out / "checkpoints" / "averaged" / "model.safetensors")
    assert averaged_weights.keys() == states[0].keys()
    moved = 0
    for name, tensor in averaged_weights.items():
        mean = (sum(state[name].double() for state in states) / count).to(tensor.dtype)
        torch.testing.assert_close(tensor, mean, rtol=0, atol=1e-7)
        moved += not states[0][name].equal(states[1][name])
    assert moved > 0, "the two kept checkpoints are the same weights: nothing was averaged"

    # The mean and the single best, scored again by the evaluate stage on the same
    # utterances; the mean is exported unless it reads worse than the best.
    averaged = json.loads((out / "checkpoints" / "averaged" / "averaged.json").read_text())
    assert averaged["steps"] == chosen
    mean_wer, mean_errors, words = evaluate_stage(
        out / "checkpoints" / "averaged", speech_manifest, tmp_path / "eval-mean"
    )
    best_wer, best_errors, best_words = evaluate_stage(
        out / "checkpoints" / "best", speech_manifest, tmp_path / "eval-best"
    )
    assert best_words == words
    assert averaged["wer"] == pytest.approx(mean_wer, abs=1e-6)
    assert averaged["best_step"] == best_step
    assert averaged["best_wer"] == pytest.approx(best_wer, abs=1e-6)
    assert averaged["wer_se"] == pytest.approx(ratio_standard_error(mean_errors, words))
    difference = [m - b for m, b in zip(mean_errors, best_errors, strict=True)]
    difference_se = ratio_standard_error(difference, words)
    assert averaged["difference_se"] == pytest.approx(difference_se)
    expect_mean = mean_wer <= best_wer + 1e-9
    # Each run exercises the branch it is meant to.
    assert expect_mean is (exported == "mean"), (mean_wer, best_wer, difference_se)
    assert averaged["exported"] is expect_mean

    exported = load_file(out / "export" / "model.safetensors")
    reference = (
        averaged_weights
        if expect_mean
        else load_file(out / "checkpoints" / "best" / "model.safetensors")
    )
    assert exported.keys() == reference.keys()
    for name, tensor in exported.items():
        assert tensor.equal(reference[name]), name
    card = (out / "export" / "README.md").read_text()
    result = json.loads((out / "result.json").read_text())
    if expect_mean:
        assert f"the mean of the checkpoints of steps {', '.join(map(str, chosen))}" in card
        assert f"exported the mean of steps {chosen}" in result["message"]
    else:
        assert f"best checkpoint (exported): step {best_step}" in card
        assert f"exported step {best_step}" in result["message"]
        assert f"the mean of steps {chosen} read" in result["message"]

    assert all(e.wer_se is not None for e in evaluations)
    # The change since the previous evaluation, on the same utterances: none for the first.
    changes = [e.wer_change_se for e in evaluations]
    assert changes[0] is None and all(c is not None and c >= 0 for c in changes[1:])


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


def test_a_resumed_run_compares_the_mean_with_the_best_found_before_the_resume(
    tmp_path, speech_manifest
):
    """The best checkpoint's per-utterance counts live in the process that found it; a run
    resumed after it scores that checkpoint again before comparing the mean with it."""
    model = build_tiny_whisper(tmp_path / "model", TEST_SENTENCES)
    out = tmp_path / "run"
    flags = {**RUNS["best"], "max_new_tokens": 6}
    assert train_in_process(*train_args(model, speech_manifest, out, **flags)) == 0
    # A new trainer resumes from step 60's checkpoint for 20 more steps.
    more = {**flags, "max_steps": 80}
    assert train_in_process(*train_args(model, speech_manifest, out, **more)) == 0

    evaluations = read_history(out).evaluations
    assert [e.step for e in evaluations] == [20, 40, 60, 80]
    best = min(evaluations, key=lambda e: (e.wer, e.step))
    assert best.step <= 60, "the best must be found before the resume for this to test it"
    averaged = json.loads((out / "checkpoints" / "averaged" / "averaged.json").read_text())
    assert averaged["best_step"] == best.step
    best_wer, best_errors, words = evaluate_stage(
        out / "checkpoints" / "best", speech_manifest, tmp_path / "eval-best"
    )
    mean_wer, mean_errors, _ = evaluate_stage(
        out / "checkpoints" / "averaged", speech_manifest, tmp_path / "eval-mean"
    )
    assert averaged["best_wer"] == pytest.approx(best_wer, abs=1e-6) == best.wer
    assert averaged["wer"] == pytest.approx(mean_wer, abs=1e-6)
    difference = [m - b for m, b in zip(mean_errors, best_errors, strict=True)]
    difference_se = ratio_standard_error(difference, words)
    assert averaged["difference_se"] == pytest.approx(difference_se)
    assert averaged["exported"] is (mean_wer <= best_wer + 1e-9)
