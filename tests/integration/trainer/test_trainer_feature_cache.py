"""Reusing featurised utterances across epochs changes nothing in what the trainer learns."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from marco_trainer.contract import StageResult
from tests.trainer_runs import read_history, read_trace, run_trainer, train_args


def test_training_with_the_feature_cache_equals_training_without_it(
    tmp_path, tiny_whisper, speech_manifest
):
    # 4 utterances in micro-batches of 2 over 8 steps: epochs 2 to 4 come from the cache.
    flags = dict(learning_rate=1e-2, max_steps=8, eval_every=4, per_device_batch_size=2)
    runs = {}
    for name, megabytes in (("cached", 64), ("uncached", 0)):
        out = tmp_path / name
        done = run_trainer(
            *train_args(tiny_whisper, speech_manifest, out, feature_cache_mb=megabytes, **flags)
        )
        assert done.returncode == 0, done.stderr[-3000:]
        runs[name] = out

    cached, uncached = runs["cached"], runs["uncached"]
    counts = {
        n: StageResult.model_validate_json((runs[n] / "result.json").read_text()).counts
        for n in runs
    }
    assert counts["cached"]["feature_cache_utterances"] == 4
    assert counts["uncached"]["feature_cache_utterances"] == 0

    a, b = read_history(cached).evaluations, read_history(uncached).evaluations
    assert [(e.step, e.loss, e.wer) for e in a] == [(e.step, e.loss, e.wer) for e in b]
    assert [t["loss"] for t in read_trace(cached)] == [t["loss"] for t in read_trace(uncached)]
    assert a[-1].loss < a[0].loss  # it trained
    w1 = load_file(cached / "checkpoints" / "last" / "model.safetensors")
    w2 = load_file(uncached / "checkpoints" / "last" / "model.safetensors")
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
