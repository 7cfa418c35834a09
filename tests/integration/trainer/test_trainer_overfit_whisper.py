"""Encoder-decoder family: a tiny random Whisper overfits four spoken sentences."""

from __future__ import annotations

import json

import pytest
import soundfile as sf
import torch

from marco_contract.formats import StageResult
from marco_trainer.cli import main
from marco_trainer.evaluate import EvaluationReport
from marco_trainer.train.loop import Trainer
from marco_trainer.train.options import TrainOptions

pytestmark = pytest.mark.slow


def test_whisper_loss_falls_and_best_checkpoint_is_exported(
    tmp_path, tiny_whisper, speech_manifest
):
    out = tmp_path / "run"
    opts = TrainOptions(
        model=str(tiny_whisper),
        train_manifests=[str(speech_manifest)],
        validation_manifest=str(speech_manifest),
        output_dir=out,
        learning_rate=1e-2,
        max_steps=30,
        eval_every=10,
        per_device_batch_size=2,
        gradient_accumulation=1,
        metrics_port=0,
        max_new_tokens=8,
        adaptation="overfit",
    )
    trainer = Trainer(opts)
    try:
        assert trainer.run() == 0
    finally:
        trainer.close()
    assert trainer.asr.family == "encoder-decoder"
    trainable, total = trainer.asr.parameter_counts()
    assert trainable == total  # encoder-decoder models are fully fine-tuned

    history = json.loads((out / "evaluations.json").read_text())
    losses = [e["loss"] for e in history["evaluations"]]
    assert [e["step"] for e in history["evaluations"]] == [10, 20, 30]
    assert losses[-1] < 0.6 * losses[0], losses
    assert history["finished"] is True

    result = StageResult.model_validate_json((out / "result.json").read_text())
    wers = {e["step"]: e["wer"] for e in history["evaluations"]}
    assert result.ok and result.steps == 30 and result.family == "encoder-decoder"
    assert result.wer == pytest.approx(min(wers.values()), abs=1e-3)
    assert wers[result.best_step] == min(wers.values())

    # The export is a plain Hugging Face model: the best weights, a processor, a model card.
    export = out / "export"
    card = (export / "README.md").read_text()
    assert f"step {result.best_step}" in card and "speech.jsonl" in card
    assert not (export / "optimizer.pt").exists()
    from safetensors.torch import load_file

    best = load_file(out / "checkpoints" / "best" / "model.safetensors")
    exported = load_file(export / "model.safetensors")
    assert best.keys() == exported.keys()
    assert all(torch.equal(best[k], exported[k]) for k in best)
    assert (out / "wer.png").stat().st_size > 1000


def test_evaluate_stage_skips_and_counts_corrupt_audio(tmp_path, tiny_whisper, speech_manifest):
    manifest = tmp_path / "eval.jsonl"
    lines = speech_manifest.read_text().splitlines()
    base = speech_manifest.parent
    rows = [json.loads(line) for line in lines]
    for row in rows:
        row["audio_filepath"] = str(base / row["audio_filepath"])
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    nan_path = tmp_path / "nan.wav"
    sf.write(nan_path, [float("nan")] * 1600, 16000, subtype="FLOAT")
    rows += [
        {"audio_filepath": "broken.wav", "text": "broken", "duration": 1.0},
        {"audio_filepath": "nan.wav", "text": "not a number", "duration": 0.1},
        {"audio_filepath": "missing.wav", "text": "missing"},
    ]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"text": "no path"}\n')

    out = tmp_path / "eval"
    code = main(
        [
            "evaluate",
            "--model",
            str(tiny_whisper),
            "--manifest",
            str(manifest),
            "--output-dir",
            str(out),
            "--batch-size",
            "3",
        ]
    )
    assert code == 0
    report = EvaluationReport.model_validate_json((out / "report.json").read_text())
    result = StageResult.model_validate_json((out / "result.json").read_text())
    assert result.stage == "evaluate" and result.family == "encoder-decoder"
    assert result.counts["evaluated"] == 4
    # missing.wav has no duration: caught reading its header; the other two when decoded.
    assert result.counts["corrupt_audio"] == 3
    assert result.counts["bad_lines"] == 1
    # One count of what was left out, each with its reason: the three files and the line.
    assert len(report.utterances) == 4 and len(report.skipped) == result.counts["skipped"] == 4
    assert any("nan.wav" in reason and "non-finite" in reason for reason in report.skipped)
    assert report.wer == result.wer
    errors = sum(u.word_errors for u in report.utterances)
    words = sum(u.reference_words for u in report.utterances)
    assert report.wer == pytest.approx(100 * errors / words)


def test_evaluate_max_samples_takes_the_first_utterances(tmp_path, tiny_whisper, speech_manifest):
    out = tmp_path / "eval"
    args = ["evaluate", "--model", str(tiny_whisper), "--manifest", str(speech_manifest)]
    assert main([*args, "--output-dir", str(out), "--max-samples", "2"]) == 0
    report = EvaluationReport.model_validate_json((out / "report.json").read_text())
    assert [u.reference for u in report.utterances] == ["hello world", "good morning"]


def test_export_stage_writes_a_card_with_both_wers(tmp_path, tiny_whisper, speech_manifest):
    from transformers import WhisperForConditionalGeneration

    run = tmp_path / "run"
    base = ["--metrics-port", "0", "--max-new-tokens", "4", "--per-device-batch-size", "2"]
    assert (
        main(
            [
                "train",
                "--model",
                str(tiny_whisper),
                "--train-manifest",
                str(speech_manifest),
                "--validation-manifest",
                str(speech_manifest),
                "--output-dir",
                str(run),
                "--max-steps",
                "2",
                "--eval-every",
                "2",
                *base,
            ]
        )
        == 0
    )
    out = tmp_path / "export"
    checkpoint = run / "checkpoints" / "best"
    args = ["export", "--checkpoint", str(checkpoint), "--output-dir", str(out)]
    assert main([*args, "--baseline-wer", "80", "--final-wer", "25.5"]) == 0
    card = (out / "README.md").read_text()
    assert "| baseline (before fine-tuning) | 80.00 % |" in card
    assert "| this model | 25.50 % (-54.50 points) |" in card
    assert "optimizer steps" in card and str(speech_manifest) in card
    model = WhisperForConditionalGeneration.from_pretrained(out)
    assert model.config.d_model == 32
    with pytest.raises(SystemExit, match="--checkpoint"):
        main(["export", "--checkpoint", str(tmp_path), "--output-dir", str(tmp_path / "x")])


def test_evaluate_a_real_pretrained_whisper(tmp_path, whisper_tiny_dir, speech_manifest):
    """Whisper tiny.en (imported offline) reads flite speech: the WER is that of a real model."""
    out = tmp_path / "eval"
    args = ["evaluate", "--model", str(whisper_tiny_dir), "--manifest", str(speech_manifest)]
    assert main([*args, "--output-dir", str(out), "--batch-size", "4"]) == 0
    report = EvaluationReport.model_validate_json((out / "report.json").read_text())
    assert report.family == "encoder-decoder" and len(report.utterances) == 4
    pairs = [(u.reference, u.hypothesis) for u in report.utterances]
    # Whisper's English normaliser turns "one two three" into "123" but "1 2 3" into
    # "one 2 3", so the digits the model writes cost errors; the other three are exact.
    assert [u.word_errors for u in report.utterances[:3]] == [0, 0, 0], pairs
    assert report.utterances[3].normalized_reference == "123"
    assert report.wer < 50.0, pairs
