"""Unreadable training audio is skipped and counted; the run goes on and still learns."""

from __future__ import annotations

import json
import math

import pytest

from marco_contract.formats import StageResult
from marco_trainer.cli import main
from tests.trainer_runs import read_history, read_trace, train_args

pytestmark = pytest.mark.slow


def test_unreadable_files_are_skipped_counted_and_never_stop_training(
    tmp_path, tiny_whisper, speech_manifest
):
    rows = [json.loads(line) for line in speech_manifest.read_text().splitlines()]
    for row in rows:
        row["audio_filepath"] = str(speech_manifest.parent / row["audio_filepath"])
    # Headers lie (a duration is given, so the manifest scan trusts them): found when read.
    for name in ("truncated.wav", "garbage.wav"):
        (tmp_path / name).write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt ")
        rows.append({"audio_filepath": name, "text": "never heard", "duration": 1.0})
    manifest = tmp_path / "train.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))

    out = tmp_path / "run"
    args = train_args(
        tiny_whisper,
        manifest,
        out,
        learning_rate=1e-2,
        max_steps=12,
        eval_every=6,
        gradient_accumulation=2,
        max_new_tokens=4,
    )
    assert main(args) == 0

    result = StageResult.model_validate_json((out / "result.json").read_text())
    # 6 micro-batches of one file an epoch, 3 steps an epoch: 12 steps read each file 4 times.
    assert result.counts["skipped_audio"] == 2 * 4
    assert result.counts["train_utterances"] == 6
    # The same manifest validates: its two broken files are left out of WER and counted.
    assert result.counts["validation_corrupt_audio"] == 2
    trace = read_trace(out)
    learned = [t["loss"] for t in trace if t["loss"] is not None]
    assert len(trace) == 12 and len(learned) >= 8
    assert all(math.isfinite(x) for x in learned)
    history = read_history(out)
    assert history.evaluations[-1].loss < history.evaluations[0].loss
    assert (out / "export" / "model.safetensors").exists()
