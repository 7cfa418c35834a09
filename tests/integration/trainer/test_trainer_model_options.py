"""Model options the trainer exposes: gradient checkpointing, full fine-tune of the LLM family."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers.modeling_layers import GradientCheckpointingLayer

from marco_trainer.models import family_from_config, load_asr_model
from marco_trainer.models.base import LoraOptions


def speech(manifest, count=2):
    folder = manifest.parent
    return [sf.read(folder / f"utt{i:02d}.wav", dtype="float32")[0] for i in range(count)]


def count_layer_runs(model) -> list[int]:
    """A one-item list counting the forward runs of the modules inside checkpointable layers.

    transformers keeps a checkpointed layer's own hooks out of the recompute, but the
    modules inside it run again in backward: their runs show whether it recomputed.
    """
    runs = [0]

    def hook(*_) -> None:
        runs[0] += 1

    for layer in model.modules():
        if isinstance(layer, GradientCheckpointingLayer):
            for inner in layer.children():
                inner.register_forward_hook(hook)
    return runs


@pytest.mark.parametrize("family", ["encoder-decoder", "llm"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(
    family, tiny_whisper, tiny_qwen2_audio, speech_manifest
):
    source = str(tiny_whisper if family == "encoder-decoder" else tiny_qwen2_audio)
    assert family_from_config(source) == family
    lora = LoraOptions(r=4, alpha=8, dropout=0.0) if family == "llm" else None
    audios, texts = speech(speech_manifest), ["hello world", "good morning"]
    results = []
    for checkpointing in (False, True):
        torch.manual_seed(0)  # the same random LoRA A matrices in both models
        asr = load_asr_model(
            source, lora=lora, trainable=True, gradient_checkpointing=checkpointing
        )
        asr.model.train()
        if lora is not None:  # LoRA B starts at zero: give the adapters a gradient path
            for name, param in asr.model.named_parameters():
                if "lora_B" in name:
                    param.data.fill_(0.01)
        # Checkpointed layers run their forward again during backward: count the runs, so
        # the comparison below is not between two models that both skip checkpointing.
        runs = count_layer_runs(asr.model)
        loss = asr.loss(asr.model, asr.training_batch(audios, texts))
        forward_runs = runs[0]
        loss.backward()
        assert forward_runs > 0
        # Recomputed in backward with checkpointing, never without.
        assert (runs[0] > forward_runs) == checkpointing, (runs[0], forward_runs)
        grads = [p.grad.clone() for p in asr.trainable_parameters()]
        assert all(g is not None and bool(g.isfinite().all()) for g in grads)
        results.append((float(loss.detach()), grads))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert loss_b == pytest.approx(loss_a, rel=1e-5)
    assert all(
        np.allclose(a.numpy(), b.numpy(), atol=1e-6) for a, b in zip(grads_a, grads_b, strict=True)
    )


def test_unknown_model_type_is_refused_by_name(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match="neither a speech"):
        family_from_config(str(tmp_path))
