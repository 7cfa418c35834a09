"""How much memory one training rank needs: a pure estimate from the model's config.

The parameter count comes from the dimensions in the model's `config.json`
(`model_dims`), not from its safetensors header: the config is one small file
every Hugging Face checkpoint has, a stage reads it without loading weights, and
the activation estimate needs its dimensions anyway; the two model families the
trainer runs (Whisper-style encoder-decoders, Qwen2-Audio-style audio LLMs) have
a closed form for their parameter count, which the tests hold to the real models.

`estimate_memory` then counts, per rank, what the trainer holds (docs/architecture.md,
"Memory estimate"): fp32 weights (the trainer always loads fp32; bf16 is autocast,
so the weights are the fp32 master copy), fp32 gradients, AdamW's two fp32 moments,
autocast's bf16 copies of the trainable weights, the activations a micro-batch
saves for the backward pass, and a fixed runtime allowance; and on the host the
fp32 model every rank loads before it moves it to its device. No torch, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from marco_contract.api_model import ApiModel, Family

Strategy = Literal["ddp", "fsdp"]
Precision = Literal["bf16", "fp32"]

GIB = 2**30
#: The trainer's weights, gradients and AdamW moments are fp32 whatever the precision.
FP32 = 4
#: Bytes of an activation autocast computes in its dtype (matmul, convolution, attention
#: and what follows them). The residual stream (the fp32 weights' sums), the norms' inputs
#: and the loss stay fp32 under autocast: `Saved.fp32` counts those at 4 bytes always.
ACTIVATION_BYTES: dict[str, int] = {"bf16": 2, "fp32": 4}
#: AdamW keeps two moments (exp_avg, exp_avg_sq) per trainable parameter.
ADAM_STATES = 2
#: Logit-sized fp32 tensors alive around the loss: the logits, their shifted (or upcast)
#: copy, log-softmax's output, and the gradient flowing back into them.
LOGIT_COPIES = 4
#: Not estimated from the model: the CUDA context, cuBLAS/NCCL workspaces and the
#: caching allocator's slack on the GPU; Python, torch and the CUDA libraries on the host.
#: An allowance each, from what such processes take, not a measurement of this model.
GPU_RUNTIME = 2 * GIB
HOST_RUNTIME = 2 * GIB
#: Bytes per element of a checkpoint's stored dtype (config.json's `torch_dtype`/`dtype`).
DTYPE_BYTES: dict[str, int] = {"float32": 4, "float16": 2, "bfloat16": 2}
#: Tokens before the transcript: Whisper's prefix (start, language, task, no-timestamps)
#: and the audio LLM's chat prompt around its audio tokens.
#: (The trainer's ASR prompt is about 15 tokens with Qwen's tokenizer, 46 with the tests'
#: tiny one; 48 bounds both.)
PREFIX_TOKENS: dict[str, int] = {"encoder-decoder": 4, "llm": 48}
#: Feature frames per second of audio (a 10 ms hop): the encoder's positions are half.
FRAMES_PER_SECOND = 100


class TransformerDims(ApiModel):
    """One stack of transformer layers: an audio encoder, a decoder or a language model."""

    layers: int = Field(ge=0)
    hidden: int = Field(ge=1)
    heads: int = Field(ge=1)
    kv_heads: int = Field(ge=1, description="Key/value heads (grouped-query attention).")
    ffn: int = Field(ge=1, description="Width of the feed-forward layer.")
    positions: int = Field(ge=1, description="Position table size (audio frames / 2, tokens).")

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * (self.hidden // self.heads)


class ModelDims(ApiModel):
    """What the estimate needs of a model, read from its config.json (`model_dims`)."""

    family: Family
    vocab_size: int = Field(ge=1)
    mel_bins: int = Field(ge=1)
    encoder: TransformerDims = Field(description="The audio encoder (Whisper-style).")
    decoder: TransformerDims = Field(description="The text decoder, or the LLM.")
    tied_embeddings: bool = Field(description="The output projection is the input embedding.")
    checkpoint_bytes_per_parameter: int = Field(ge=1, le=8, description="Its stored dtype.")


class DeviceMemory(ApiModel):
    """Bytes one rank holds on its device (on the host when it trains on CPU)."""

    weights: int = Field(ge=0, description="fp32 parameters (a 1/worldSize shard under FSDP).")
    weight_casts: int = Field(
        ge=0,
        description="bf16 copies autocast makes of the weights a backward pass goes through.",
    )
    gradients: int = Field(ge=0, description="fp32 gradients, and DDP's bucket copy of them.")
    optimizer: int = Field(ge=0, description="AdamW's two fp32 moments.")
    activations: int = Field(ge=0, description="What one micro-batch saves for backward.")
    runtime: int = Field(ge=0, description="CUDA context and workspaces (an allowance).")
    total: int = Field(ge=0)


class HostMemory(ApiModel):
    """Bytes one training pod holds on its host while its ranks load the model."""

    ranks: int = Field(ge=1, description="Ranks (processes) in the pod.")
    model_per_rank: int = Field(ge=0, description="The fp32 model each rank loads on the host.")
    runtime_per_rank: int = Field(ge=0, description="Python, torch, CUDA libs (an allowance).")
    training_per_rank: int = Field(
        ge=0, description="The device's share when training runs on CPU (no GPU); else 0."
    )
    checkpoint: int = Field(ge=0, description="The checkpoint's files, mapped once per pod.")
    total: int = Field(ge=0)


class MemoryEstimate(ApiModel):
    """The memory a training rank and pod need, per component, in bytes."""

    parameters: int = Field(ge=0)
    trainable_parameters: int = Field(ge=0)
    precision: Precision
    strategy: Strategy
    world_size: int = Field(ge=1)
    per_device_batch_size: int = Field(ge=1)
    activations_per_sample: int = Field(ge=0, description="Bytes of activations per utterance.")
    gradient_checkpointing: bool
    device: DeviceMemory
    host: HostMemory


# --------------------------------------------------------------------- config.json


def _get(config: Mapping[str, Any], *names: str, default: Any = None) -> Any:
    for name in names:
        if config.get(name) is not None:
            return config[name]
    if default is not None:
        return default
    raise ValueError(f"config.json has none of {', '.join(names)}")


def _stored_bytes(config: Mapping[str, Any]) -> int:
    dtype = config.get("dtype") or config.get("torch_dtype") or "float32"
    return DTYPE_BYTES.get(str(dtype), FP32)


def model_dims(config: Mapping[str, Any]) -> ModelDims:
    """The dimensions of a Whisper-style or Qwen2-Audio-style model's config.json (as a
    dict); ValueError for any other kind of model."""
    kind = config.get("model_type")
    if kind == "whisper":
        heads = _get(config, "encoder_attention_heads")
        decoder_heads = _get(config, "decoder_attention_heads")
        return ModelDims(
            family="encoder-decoder",
            vocab_size=_get(config, "vocab_size"),
            mel_bins=_get(config, "num_mel_bins"),
            encoder=TransformerDims(
                layers=_get(config, "encoder_layers"),
                hidden=_get(config, "d_model"),
                heads=heads,
                kv_heads=heads,
                ffn=_get(config, "encoder_ffn_dim"),
                positions=_get(config, "max_source_positions"),
            ),
            decoder=TransformerDims(
                layers=_get(config, "decoder_layers"),
                hidden=_get(config, "d_model"),
                heads=decoder_heads,
                kv_heads=decoder_heads,
                ffn=_get(config, "decoder_ffn_dim"),
                positions=_get(config, "max_target_positions"),
            ),
            # Whisper's proj_out is its token embedding.
            tied_embeddings=True,
            checkpoint_bytes_per_parameter=_stored_bytes(config),
        )
    if kind == "qwen2_audio":
        audio, text = config.get("audio_config") or {}, config.get("text_config") or {}
        if not audio or not text:
            raise ValueError("config.json of a qwen2_audio model without audio_config/text_config")
        heads = _get(audio, "encoder_attention_heads")
        text_heads = _get(text, "num_attention_heads")
        return ModelDims(
            family="llm",
            vocab_size=_get(text, "vocab_size"),
            mel_bins=_get(audio, "num_mel_bins"),
            encoder=TransformerDims(
                layers=_get(audio, "encoder_layers"),
                hidden=_get(audio, "d_model"),
                heads=heads,
                kv_heads=heads,
                ffn=_get(audio, "encoder_ffn_dim"),
                positions=_get(audio, "max_source_positions"),
            ),
            decoder=TransformerDims(
                layers=_get(text, "num_hidden_layers"),
                hidden=_get(text, "hidden_size"),
                heads=text_heads,
                kv_heads=_get(text, "num_key_value_heads", default=text_heads),
                ffn=_get(text, "intermediate_size"),
                positions=_get(text, "max_position_embeddings"),
            ),
            tied_embeddings=bool(text.get("tie_word_embeddings", False)),
            checkpoint_bytes_per_parameter=_stored_bytes(config),
        )
    raise ValueError(
        f"no memory estimate for model_type {kind!r}: whisper and qwen2_audio are known"
    )


# ---------------------------------------------------------------------- parameters


def _audio_encoder_layer_linears(e: TransformerDims) -> dict[str, tuple[int, int]]:
    """(in, out) of each Linear of a Whisper-style encoder layer, by module name."""
    h, f = e.hidden, e.ffn
    return {
        "q_proj": (h, h),
        "k_proj": (h, h),
        "v_proj": (h, h),
        "out_proj": (h, h),
        "fc1": (h, f),
        "fc2": (f, h),
    }


def _whisper_decoder_layer_linears(d: TransformerDims) -> list[tuple[str, int, int]]:
    h, f = d.hidden, d.ffn
    attention = [("q_proj", h, h), ("k_proj", h, h), ("v_proj", h, h), ("out_proj", h, h)]
    return [*attention, *attention, ("fc1", h, f), ("fc2", f, h)]


def _llm_layer_linears(d: TransformerDims) -> dict[str, tuple[int, int]]:
    h, kv, f = d.hidden, d.kv_dim, d.ffn
    return {
        "q_proj": (h, h),
        "k_proj": (h, kv),
        "v_proj": (h, kv),
        "o_proj": (h, h),
        "gate_proj": (h, f),
        "up_proj": (h, f),
        "down_proj": (f, h),
    }


def _encoder_stem(dims: ModelDims) -> int:
    """Whisper's two convolutions (kernel 3, with bias) and its position table."""
    h = dims.encoder.hidden
    return dims.mel_bins * h * 3 + h + h * h * 3 + h + dims.encoder.positions * h


def _encoder_layer(e: TransformerDims) -> int:
    """Weights and biases (k_proj has no bias) of the linears, and two LayerNorms."""
    h = e.hidden
    linears = _audio_encoder_layer_linears(e)
    biases = sum(out for name, (_, out) in linears.items() if name != "k_proj")
    return sum(i * o for i, o in linears.values()) + biases + 2 * 2 * h


def _decoder_layer(dims: ModelDims) -> int:
    d = dims.decoder
    if dims.family == "encoder-decoder":
        weights = sum(i * o for _, i, o in _whisper_decoder_layer_linears(d))
        biases = sum(o for name, _, o in _whisper_decoder_layer_linears(d) if name != "k_proj")
        return weights + biases + 3 * 2 * d.hidden  # three LayerNorms
    # Qwen2: biases on q, k and v only; two RMSNorms (a weight each).
    linears = _llm_layer_linears(d)
    biases = d.hidden + 2 * d.kv_dim
    return sum(i * o for i, o in linears.values()) + biases + 2 * d.hidden


def encoder_parameters(dims: ModelDims) -> int:
    """The audio encoder: stem, layers, final LayerNorm."""
    e = dims.encoder
    return _encoder_stem(dims) + e.layers * _encoder_layer(e) + 2 * e.hidden


def parameter_count(dims: ModelDims) -> int:
    """Every parameter of the model (trainable or not)."""
    d = dims.decoder
    embeddings = dims.vocab_size * d.hidden
    output = 0 if dims.tied_embeddings else dims.vocab_size * d.hidden
    if dims.family == "encoder-decoder":
        # Learned positions and a final LayerNorm.
        decoder = embeddings + d.positions * d.hidden + d.layers * _decoder_layer(dims)
        return encoder_parameters(dims) + decoder + 2 * d.hidden + output
    # Qwen2-Audio: the projector (a Linear with bias) from the encoder into the LLM.
    projector = dims.encoder.hidden * d.hidden + d.hidden
    llm = embeddings + d.layers * _decoder_layer(dims) + d.hidden + output
    return encoder_parameters(dims) + projector + llm


def lora_parameters(dims: ModelDims, rank: int, targets: Sequence[str]) -> int:
    """LoRA's A (r x in) and B (out x r) of every Linear whose name is a target, as peft
    matches `target_modules` (the module name's last part)."""
    names = set(targets)
    total = 0
    for _ in range(dims.encoder.layers):
        total += sum(
            rank * (i + o)
            for name, (i, o) in _audio_encoder_layer_linears(dims.encoder).items()
            if name in names
        )
    if dims.family == "encoder-decoder":
        layer = [(n, i, o) for n, i, o in _whisper_decoder_layer_linears(dims.decoder)]
    else:
        layer = [(n, i, o) for n, (i, o) in _llm_layer_linears(dims.decoder).items()]
    total += dims.decoder.layers * sum(rank * (i + o) for n, i, o in layer if n in names)
    return total


# --------------------------------------------------------------------- activations


@dataclass(frozen=True)
class Saved:
    """Elements kept for the backward pass: in fp32 whatever the precision (the residual
    stream, norm inputs, masks, the loss's logits), and in autocast's dtype (the rest)."""

    fp32: float = 0.0
    cast: float = 0.0

    def __add__(self, other: Saved) -> Saved:
        return Saved(self.fp32 + other.fp32, self.cast + other.cast)

    def __mul__(self, times: float) -> Saved:
        return Saved(self.fp32 * times, self.cast * times)

    def bytes(self, precision: str) -> float:
        return self.fp32 * FP32 + self.cast * ACTIVATION_BYTES[precision]


def _saved_linear_inputs(
    inputs: Sequence[tuple[int, Sequence[str]]], lora: set[str] | None, lora_dropout: bool
) -> float:
    """Elements a layer's linears save per token. A trainable Linear keeps its input for
    its weight's gradient (Linears reading one input share it); a frozen one keeps none.
    Under LoRA each adapted Linear keeps its own dropout's output and mask (a byte: a
    quarter of an fp32 element, counted as half to stay on the safe side in bf16)."""
    total = 0.0
    for size, names in inputs:
        if lora is None:
            total += size
            continue
        adapted = [name for name in names if name in lora]
        if adapted and not lora_dropout:
            total += size
        else:
            total += len(adapted) * size * 1.5
    return total


def _encoder_layer_saved(e: TransformerDims, lora: set[str] | None, dropout: bool) -> Saved:
    """Per token, a pre-LayerNorm Whisper encoder layer: its two LayerNorms' inputs,
    attention's q, k, v and output, GELU's input, and what its Linears keep."""
    h, f = e.hidden, e.ffn
    linears = [
        (h, ("q_proj", "k_proj", "v_proj")),
        (h, ("out_proj",)),
        (h, ("fc1",)),
        (f, ("fc2",)),
    ]
    return Saved(fp32=2 * h, cast=4 * h + f + _saved_linear_inputs(linears, lora, dropout))


def _decoder_layer_saved(d: TransformerDims, lora: set[str] | None, dropout: bool) -> Saved:
    """Per token, a Whisper decoder layer: three LayerNorms, self-attention's q, k, v, out,
    cross-attention's q and out, GELU's input, and its Linears' inputs."""
    h, f = d.hidden, d.ffn
    linears = [
        (h, ("q_proj", "k_proj", "v_proj")),
        (h, ("out_proj",)),
        (h, ("q_proj",)),
        (h, ("out_proj",)),
        (h, ("fc1",)),
        (f, ("fc2",)),
    ]
    return Saved(fp32=3 * h, cast=4 * h + 2 * h + f + _saved_linear_inputs(linears, lora, dropout))


def _llm_layer_saved(d: TransformerDims, lora: set[str] | None, dropout: bool) -> Saved:
    """Per token, a Qwen2 layer: each RMSNorm's input (and its normalised output when its
    weight trains), attention's rotated q and k, v and output, SwiGLU's gate, up and
    SiLU output, and its Linears' inputs."""
    h, kv, f = d.hidden, d.kv_dim, d.ffn
    norms = 2 * h + (2 * h if lora is None else 0)
    linears = [
        (h, ("q_proj", "k_proj", "v_proj")),
        (h, ("o_proj",)),
        (h, ("gate_proj", "up_proj")),
        (f, ("down_proj",)),
    ]
    cast = 2 * h + 2 * kv + 3 * f + _saved_linear_inputs(linears, lora, dropout)
    return Saved(fp32=norms, cast=cast)


def activation_elements_per_sample(
    dims: ModelDims,
    text_tokens: int,
    lora: set[str] | None = None,
    lora_dropout: bool = True,
    frozen_encoder_layers: int = 0,
    gradient_checkpointing: bool = False,
    audio_seconds: float | None = None,
) -> Saved:
    """Elements one utterance's forward pass keeps for its backward pass.

    Per token of each layer, the tensors autograd saves (the `_*_layer_saved` counts:
    9h + 2f for a Whisper layer, about 13h + 2kv + 4f for a Qwen2 one, in full
    fine-tuning); attention is counted without its s x s score matrix (PyTorch's fused
    SDPA kernels keep none; Qwen2-Audio's encoder keeps its s x s padding mask). The
    encoder sees its whole window (Whisper pads every clip to it: positions = frames / 2);
    the convolution stem keeps its input, both
    convolutions' outputs and GELUs' inputs. Frozen first layers (and a frozen stem)
    keep nothing: nothing before them needs a gradient. The decoder (or LLM) sees the
    prefix and the transcript (and, for the LLM, the audio tokens of the longest clip,
    `audio_seconds`, default the whole window: its pooled encoder frames), and the loss
    keeps LOGIT_COPIES logit-sized fp32 tensors. Gradient checkpointing keeps each
    layer's input (fp32) instead, plus one layer's saved tensors while it is recomputed.
    """
    e, d = dims.encoder, dims.decoder
    s_enc = e.positions
    frames = 2 * s_enc
    stem = Saved(cast=dims.mel_bins * frames + 2 * e.hidden * frames + 3 * e.hidden * s_enc)
    enc_layer = _encoder_layer_saved(e, lora, lora_dropout)
    trained_enc_layers = max(0, e.layers - frozen_encoder_layers)
    if frozen_encoder_layers or lora is not None:
        stem = Saved()  # its convolutions get no gradient: nothing is kept for them
    if dims.family == "encoder-decoder":
        s_dec = min(d.positions, text_tokens + PREFIX_TOKENS[dims.family])
        dec_layer = _decoder_layer_saved(d, lora, lora_dropout)
        # Cross-attention's keys and values, per encoder token in every decoder layer, and
        # the encoder's output they are projected from.
        cross = Saved(cast=2 * d.hidden * d.layers * s_enc + e.hidden * s_enc)
        per_layer = [(trained_enc_layers, s_enc, enc_layer), (d.layers, s_dec, dec_layer)]
        extra = stem + cross
    else:
        # The encoder's output is average-pooled (stride 2) into the LLM's audio tokens,
        # after a final LayerNorm and the projector (its input is kept if it trains).
        if audio_seconds is not None:
            frames = min(frames, math.ceil(audio_seconds * FRAMES_PER_SECOND))
        s_audio = (((frames - 1) // 2 + 1) - 2) // 2 + 1
        s_dec = s_audio + text_tokens + PREFIX_TOKENS[dims.family]
        dec_layer = _llm_layer_saved(d, lora, lora_dropout)
        per_layer = [(trained_enc_layers, s_enc, enc_layer), (d.layers, s_dec, dec_layer)]
        projector = e.hidden * s_audio if lora is None else 0
        # Qwen2-Audio's encoder masks its padded window: an fp32 s x s mask that each
        # trained encoder layer's attention keeps.
        mask = trained_enc_layers * s_enc * s_enc
        extra = stem + Saved(fp32=2 * e.hidden * s_enc + mask, cast=projector)
    logits = Saved(fp32=LOGIT_COPIES * dims.vocab_size * s_dec)
    if not gradient_checkpointing:
        layers = sum((per_token * (n * s) for n, s, per_token in per_layer), Saved())
        return extra + layers + logits
    inputs = Saved(
        fp32=sum(
            n * s * hidden
            for (n, s, _), hidden in zip(per_layer, (e.hidden, d.hidden), strict=True)
        )
    )
    widest = max(
        (per_token * s for n, s, per_token in per_layer if n),
        key=lambda saved: saved.bytes("fp32"),
        default=Saved(),
    )
    return extra + inputs + widest + logits


# ---------------------------------------------------------------------- the estimate


def estimate_memory(
    dims: ModelDims,
    *,
    per_device_batch_size: int,
    precision: Precision,
    text_tokens: int,
    world_size: int = 1,
    ranks_per_pod: int = 1,
    strategy: Strategy = "ddp",
    lora_rank: int | None = None,
    lora_targets: Sequence[str] = (),
    lora_dropout: bool = True,
    frozen_encoder_layers: int = 0,
    gradient_checkpointing: bool = False,
    on_gpu: bool = True,
    audio_seconds: float | None = None,
) -> MemoryEstimate:
    """Bytes per rank on its device and per pod on the host (module docstring).

    `lora_rank` None: full fine-tuning. `strategy` ddp replicates weights, gradients and
    optimizer states on every rank (and DDP keeps a bucket copy of the gradients when
    there is more than one rank); fsdp divides all three by `world_size`. `on_gpu` False:
    the ranks train on the host, whose total then includes the device's."""
    parameters = parameter_count(dims)
    lora = set(lora_targets) if lora_rank is not None else None
    if lora_rank is not None:
        trainable = lora_parameters(dims, lora_rank, lora_targets)
        weights_count = parameters + trainable
    else:
        frozen = 0
        if frozen_encoder_layers:
            # The stem and the first layers (the whole encoder but its final norm when all).
            frozen = _encoder_stem(dims) + frozen_encoder_layers * _encoder_layer(dims.encoder)
        trainable = parameters - frozen
        weights_count = parameters
    shards = world_size if strategy == "fsdp" else 1
    weights = math.ceil(weights_count * FP32 / shards)
    gradients = math.ceil(trainable * FP32 / shards)
    if strategy == "ddp" and world_size > 1:
        gradients *= 2
    optimizer = math.ceil(trainable * FP32 * ADAM_STATES / shards)
    # Autocast's bf16 copy of every weight a matmul reads on the gradient's path: cached
    # for a trainable weight, kept for the backward pass for a frozen one (LoRA's base).
    on_path = weights_count - (parameters - trainable if lora_rank is None else 0)
    weight_casts = math.ceil(on_path * 2 / shards) if precision == "bf16" else 0
    saved = activation_elements_per_sample(
        dims,
        text_tokens,
        lora=lora,
        lora_dropout=lora_dropout,
        frozen_encoder_layers=frozen_encoder_layers,
        gradient_checkpointing=gradient_checkpointing,
        audio_seconds=audio_seconds,
    )
    per_sample = math.ceil(saved.bytes(precision))
    activations = per_sample * per_device_batch_size
    runtime = GPU_RUNTIME if on_gpu else 0
    device_total = weights + weight_casts + gradients + optimizer + activations + runtime
    device = DeviceMemory(
        weights=weights,
        weight_casts=weight_casts,
        gradients=gradients,
        optimizer=optimizer,
        activations=activations,
        runtime=runtime,
        total=device_total,
    )
    training_per_rank = 0 if on_gpu else device_total
    # While loading, a rank holds its fp32 model on the host; on CPU that model is the
    # training weights, counted once (in training_per_rank).
    model_per_rank = parameters * FP32 if on_gpu else 0
    checkpoint = parameters * dims.checkpoint_bytes_per_parameter
    host_total = ranks_per_pod * (model_per_rank + HOST_RUNTIME + training_per_rank) + checkpoint
    host = HostMemory(
        ranks=ranks_per_pod,
        model_per_rank=model_per_rank,
        runtime_per_rank=HOST_RUNTIME,
        training_per_rank=training_per_rank,
        checkpoint=checkpoint,
        total=host_total,
    )
    return MemoryEstimate(
        parameters=parameters,
        trainable_parameters=trainable,
        precision=precision,
        strategy=strategy,
        world_size=world_size,
        per_device_batch_size=per_device_batch_size,
        activations_per_sample=per_sample,
        gradient_checkpointing=gradient_checkpointing,
        device=device,
        host=host,
    )
