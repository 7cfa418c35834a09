"""Reusing featurised utterances across epochs, or preparing the next step in a background
thread, changes nothing in what the trainer learns."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from marco_contract.formats import StageResult
from tests.trainer_runs import read_history, read_trace, train_args, train_in_process


def test_training_with_the_feature_cache_or_prefetch_equals_training_without_them(
    tmp_path, tiny_whisper, speech_manifest
):
    # 4 utterances in micro-batches of 2 over 8 steps: epochs 2 to 4 come from the cache.
    flags = dict(learning_rate=1e-2, max_steps=8, eval_every=4, per_device_batch_size=2)
    runs = {}
    variants = {
        "cached": dict(feature_cache_mb=64, no_prefetch=True),
        "uncached": dict(feature_cache_mb=0, no_prefetch=True),
        "prefetched": dict(feature_cache_mb=64, prefetch=True),
    }
    for name, options in variants.items():
        out = tmp_path / name
        # In this process: what it learned is under test, not the process.
        assert (
            train_in_process(*train_args(tiny_whisper, speech_manifest, out, **options, **flags))
            == 0
        )
        runs[name] = out

    counts = {
        n: StageResult.model_validate_json((runs[n] / "result.json").read_text()).counts
        for n in runs
    }
    assert counts["cached"]["feature_cache_utterances"] == 4
    assert counts["prefetched"]["feature_cache_utterances"] == 4
    assert counts["uncached"]["feature_cache_utterances"] == 0

    reference = read_history(runs["uncached"]).evaluations
    assert reference[-1].loss < reference[0].loss  # it trained
    weights = load_file(runs["uncached"] / "checkpoints" / "last" / "model.safetensors")
    for name in ("cached", "prefetched"):
        history = read_history(runs[name]).evaluations
        assert [(e.step, e.loss, e.wer) for e in history] == [
            (e.step, e.loss, e.wer) for e in reference
        ], name
        losses = [t["loss"] for t in read_trace(runs[name])]
        assert losses == [t["loss"] for t in read_trace(runs["uncached"])], name
        other = load_file(runs[name] / "checkpoints" / "last" / "model.safetensors")
        assert all(torch.equal(other[k], weights[k]) for k in weights), name
