"""A training stage's memory estimate from the spec, and the refusal of one that cannot fit.

Pure: the model's dimensions come from the baseline stage's result
(`StageResult.model`, read from the model's config.json by the stage that first loads
it), the rest from the spec; `marco_contract.memory` counts the bytes.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

from marco_contract.layout import TRIALS_STAGE
from marco_contract.memory import (
    FRAMES_PER_SECOND,
    GIB,
    MemoryEstimate,
    ModelDims,
    Strategy,
    estimate_memory,
)
from marco_operator.api import AsrAdaptationSpec

#: Condition reason and Event reason of a refusal.
INSUFFICIENT_MEMORY = "InsufficientMemory"

_SUFFIXES = {
    **{s: 1024**i for i, s in enumerate(("", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
    **{s: Decimal(1000) ** i for i, s in enumerate(("", "k", "M", "G", "T", "P", "E"))},
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
}
_QUANTITY = re.compile(r"^\+?([0-9.]+)(?:([KMGTPE]i|[numkMGTPE])|[eE]([+-]?[0-9]+))?$")


def quantity_bytes(quantity: str) -> int:
    """A Kubernetes quantity (api.Quantity, validated already) in bytes, rounded up."""
    match = _QUANTITY.fullmatch(quantity)
    if match is None:
        raise ValueError(f"not a Kubernetes quantity: {quantity!r}")
    number, suffix, exponent = match.groups()
    scale = Decimal(10) ** int(exponent) if exponent else Decimal(_SUFFIXES[suffix or ""])
    return math.ceil(Decimal(number) * scale)


def strategy(spec: AsrAdaptationSpec) -> Strategy:
    """How training shards its state (FSDP divides it by the ranks)."""
    return spec.training.strategy


def _precision(spec: AsrAdaptationSpec) -> str:
    # auto is bf16 on every GPU the trainer targets (Ampere and later), fp32 on CPU.
    if spec.training.precision == "auto":
        return "bf16" if spec.resources.gpus_per_node > 0 else "fp32"
    return spec.training.precision


def _audio_seconds(spec: AsrAdaptationSpec, dims: ModelDims) -> float:
    """The longest clip training sees: the encoder's window, or the filter's bound below it."""
    window = 2 * dims.encoder.positions / FRAMES_PER_SECOND
    return min(window, spec.filter.max_duration) if spec.filter.enabled else window


def text_tokens(spec: AsrAdaptationSpec, dims: ModelDims) -> int:
    """The longest transcript, in tokens: the decoding bound per second of audio (the same
    bound a hypothesis gets, docs/method.md) over the longest clip, plus its end token."""
    per_second = spec.decoding.tokens_per_second
    if per_second <= 0:
        return spec.decoding.max_new_tokens + 1
    return math.ceil(per_second * _audio_seconds(spec, dims)) + 1


def _lora(spec: AsrAdaptationSpec, dims: ModelDims) -> bool:
    return dims.family == "llm" and spec.model.lora.enabled


def stage_estimate(spec: AsrAdaptationSpec, dims: ModelDims, stage: str) -> MemoryEstimate:
    """The estimate for the train stage's ranks, or a trial's (one rank, one GPU)."""
    res = spec.resources
    ranks = max(1, res.gpus_per_node)
    world = 1 if stage == TRIALS_STAGE else res.nodes * ranks
    freeze = spec.training.freeze
    lora = spec.model.lora
    return estimate_memory(
        dims,
        per_device_batch_size=spec.training.per_device_batch_size,
        precision="bf16" if _precision(spec) == "bf16" else "fp32",
        text_tokens=text_tokens(spec, dims),
        audio_seconds=_audio_seconds(spec, dims),
        world_size=world,
        ranks_per_pod=1 if stage == TRIALS_STAGE else ranks,
        strategy=strategy(spec),
        lora_rank=lora.r if _lora(spec, dims) else None,
        lora_targets=lora.target_modules,
        lora_dropout=lora.dropout > 0,
        frozen_encoder_layers=dims.encoder.layers if freeze.encoder else freeze.encoder_layers,
        gradient_checkpointing=spec.training.gradient_checkpointing,
        on_gpu=res.gpus_per_node > 0,
    )


def _gib(size: int) -> str:
    return f"{size / GIB:.1f} GiB"


def _device_remedies(
    spec: AsrAdaptationSpec, dims: ModelDims, estimate: MemoryEstimate
) -> list[str]:
    """What would bring the per-GPU estimate down, cheapest first, leaving out what is on."""
    remedies = []
    if estimate.per_device_batch_size > 1:
        remedies.append(
            f"a smaller spec.training.perDeviceBatchSize (activations take "
            f"{_gib(estimate.activations_per_sample)} per utterance; raise "
            "spec.training.gradientAccumulation to keep the effective batch)"
        )
    if not spec.training.gradient_checkpointing:
        remedies.append("spec.training.gradientCheckpointing: true")
    if estimate.precision != "bf16":
        remedies.append("spec.training.precision: bf16")
    if dims.family == "llm" and not spec.model.lora.enabled:
        remedies.append("LoRA (spec.model.lora.enabled: true)")
    if estimate.strategy == "ddp":
        remedies.append(
            "more GPUs with FSDP (spec.training.strategy: fsdp divides weights, gradients and "
            "optimizer states by the number of GPUs)"
        )
    return remedies


def memory_refusal(spec: AsrAdaptationSpec, dims: ModelDims, stage: str) -> str | None:
    """Why `stage` (train or trials) cannot fit the memory the spec gives it, and what to
    change; None when it fits. GPU memory is checked only when resources.gpuMemory says
    what the GPUs have; the host's against resources.memory, the pod's limit."""
    estimate = stage_estimate(spec, dims, stage)
    res = spec.resources
    device = estimate.device
    what = "an LR trial" if stage == TRIALS_STAGE else "training"
    if res.gpus_per_node > 0 and res.gpu_memory is not None:
        available = quantity_bytes(res.gpu_memory)
        if device.total > available:
            named = [
                ("weights", device.weights),
                ("gradients", device.gradients),
                ("AdamW", device.optimizer),
                ("bf16 copies", device.weight_casts),
                (f"activations of {estimate.per_device_batch_size} utterances", device.activations),
                ("runtime", device.runtime),
            ]
            parts = ", ".join(f"{what} {_gib(size)}" for what, size in named if size)
            remedies = "; ".join(_device_remedies(spec, dims, estimate))
            return (
                f"{what} needs an estimated {_gib(device.total)} per GPU ({parts}) but "
                f"spec.resources.gpuMemory is {res.gpu_memory}: change one of: {remedies}; "
                "or a GPU with more memory (spec.resources.gpuMemory)"
            )
    host = estimate.host
    limit = quantity_bytes(res.memory)
    if host.total > limit:
        per_rank = host.model_per_rank + host.runtime_per_rank + host.training_per_rank
        on = "each loading the fp32 model" if res.gpus_per_node > 0 else "training on CPU"
        fewer = (
            "; or fewer GPUs per pod (spec.resources.gpusPerNode, with more spec.resources.nodes)"
            if host.ranks > 1
            else ""
        )
        cpu = "; or train on GPUs (spec.resources.gpusPerNode)" if res.gpus_per_node == 0 else ""
        return (
            f"{what} needs an estimated {_gib(host.total)} of host memory per pod "
            f"({host.ranks} rank(s) {on}, {_gib(per_rank)} each, and the checkpoint's files, "
            f"{_gib(host.checkpoint)}) but spec.resources.memory is {res.memory}: raise "
            f"spec.resources.memory to at least {_gib(host.total)}{fewer}{cpu}"
        )
    return None
