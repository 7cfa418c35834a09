"""LLM family (Qwen2-Audio): LoRA trains adapters only, saves adapters, exports merged."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from marco_trainer.models import load_asr_model
from marco_trainer.models.base import LoraOptions
from marco_trainer.train.loop import Trainer
from marco_trainer.train.options import TrainOptions

pytestmark = pytest.mark.slow

TARGETS = ("q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head")


def test_lora_counts_only_adapter_parameters_as_trainable(tiny_qwen2_audio):
    asr = load_asr_model(str(tiny_qwen2_audio), lora=LoraOptions(r=4, alpha=8, dropout=0.0))
    assert asr.family == "llm"
    trainable, total = asr.parameter_counts()
    lora = sum(p.numel() for n, p in asr.model.named_parameters() if "lora_" in n)
    assert trainable == lora > 0
    assert trainable < 0.2 * total
    assert all("lora_" in n for n, p in asr.model.named_parameters() if p.requires_grad)

    full = load_asr_model(str(tiny_qwen2_audio), family="llm")
    assert full.parameter_counts()[0] == full.parameter_counts()[1] == total - lora


def test_lora_loss_falls_and_checkpoints_hold_adapters_only(
    tmp_path, tiny_qwen2_audio, speech_manifest
):
    out = tmp_path / "run"
    opts = TrainOptions(
        model=str(tiny_qwen2_audio),
        train_manifests=[str(speech_manifest)],
        validation_manifest=str(speech_manifest),
        output_dir=out,
        learning_rate=5e-2,
        max_steps=30,
        eval_every=10,
        eval_samples=2,
        per_device_batch_size=2,
        gradient_accumulation=1,
        lora=LoraOptions(r=8, alpha=16, dropout=0.0, target_modules=list(TARGETS)),
        metrics_port=0,
        max_new_tokens=6,
    )
    trainer = Trainer(opts)
    base = load_asr_model(str(tiny_qwen2_audio), family="llm").model.state_dict()
    try:
        assert trainer.run() == 0
    finally:
        trainer.close()

    history = json.loads((out / "evaluations.json").read_text())
    losses = [e["loss"] for e in history["evaluations"]]
    assert losses[-1] < 0.75 * losses[0], losses

    # Frozen base weights did not move; only adapters did.
    peft_model = trainer.asr.model
    for name, param in peft_model.named_parameters():
        if "lora_" in name:
            continue
        key = name.replace("base_model.model.", "").replace(".base_layer", "")
        assert torch.equal(param.detach(), base[key]), name

    for kind in ("best", "last"):
        folder = out / "checkpoints" / kind
        assert (folder / "adapter_config.json").exists()
        assert not (folder / "model.safetensors").exists()
        adapter = load_file(folder / "adapter_model.safetensors")
        assert adapter and all("lora_" in key for key in adapter)
        assert sum(t.numel() for t in adapter.values()) == trainer.asr.parameter_counts()[0]

    # The export is self-contained: adapters merged, loadable without peft.
    from transformers import Qwen2AudioForConditionalGeneration

    export = out / "export"
    assert not (export / "adapter_config.json").exists()
    merged = Qwen2AudioForConditionalGeneration.from_pretrained(export).state_dict()
    key = "model.language_model.layers.0.self_attn.q_proj.weight"
    assert merged.keys() == base.keys()
    assert not torch.allclose(merged[key], base[key])
    assert torch.equal(
        merged["model.language_model.embed_tokens.weight"],
        base["model.language_model.embed_tokens.weight"],
    )
    assert json.loads((export / "marco_export.json").read_text())["merged_adapter"] is True
