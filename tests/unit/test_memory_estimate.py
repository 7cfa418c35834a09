"""The memory estimate's formulas (marco_contract.memory) against numbers worked out by
hand from published configs, and against published parameter counts."""

import pytest

from marco_contract.memory import (
    GPU_RUNTIME,
    HOST_RUNTIME,
    estimate_memory,
    lora_parameters,
    model_dims,
    parameter_count,
)

#: openai/whisper-large-v3's config.json (the fields the estimate reads).
WHISPER_LARGE_V3 = {
    "model_type": "whisper",
    "vocab_size": 51866,
    "num_mel_bins": 128,
    "d_model": 1280,
    "encoder_layers": 32,
    "decoder_layers": 32,
    "encoder_attention_heads": 20,
    "decoder_attention_heads": 20,
    "encoder_ffn_dim": 5120,
    "decoder_ffn_dim": 5120,
    "max_source_positions": 1500,
    "max_target_positions": 448,
    "torch_dtype": "float16",
}

#: Qwen/Qwen2-Audio-7B's config.json (the fields the estimate reads).
QWEN2_AUDIO_7B = {
    "model_type": "qwen2_audio",
    "audio_config": {
        "model_type": "qwen2_audio_encoder",
        "num_mel_bins": 128,
        "encoder_layers": 32,
        "encoder_attention_heads": 20,
        "encoder_ffn_dim": 5120,
        "d_model": 1280,
        "max_source_positions": 1500,
    },
    "text_config": {
        "model_type": "qwen2",
        "vocab_size": 156032,
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "max_position_embeddings": 8192,
        "tie_word_embeddings": False,
    },
    "torch_dtype": "bfloat16",
}

# Whisper large-v3 by hand: h = 1280, f = 5120, 32 + 32 layers, vocab 51866.
CONV1 = 128 * 1280 * 3 + 1280
CONV2 = 1280 * 1280 * 3 + 1280
ENCODER_POSITIONS = 1500 * 1280
ATTENTION = 4 * 1280 * 1280 + 3 * 1280  # q, k, v, out; k has no bias
MLP = (1280 * 5120 + 5120) + (5120 * 1280 + 1280)
LAYER_NORM = 2 * 1280
ENCODER_LAYER = ATTENTION + MLP + 2 * LAYER_NORM
DECODER_LAYER = 2 * ATTENTION + MLP + 3 * LAYER_NORM
ENCODER = CONV1 + CONV2 + ENCODER_POSITIONS + 32 * ENCODER_LAYER + LAYER_NORM
DECODER = 51866 * 1280 + 448 * 1280 + 32 * DECODER_LAYER + LAYER_NORM  # proj_out is tied
WHISPER_LARGE_V3_PARAMETERS = ENCODER + DECODER


def test_whisper_large_v3_parameter_count_is_the_published_one():
    dims = model_dims(WHISPER_LARGE_V3)
    assert parameter_count(dims) == WHISPER_LARGE_V3_PARAMETERS == 1_543_490_560
    # The model card's "1550M".
    assert parameter_count(dims) == pytest.approx(1.55e9, rel=0.01)


def test_qwen2_audio_7b_parameter_count_is_the_published_one():
    dims = model_dims(QWEN2_AUDIO_7B)
    # The hub's "8.4B params" for Qwen/Qwen2-Audio-7B.
    assert parameter_count(dims) == pytest.approx(8.4e9, rel=0.01)
    h, f, vocab = 4096, 11008, 156032
    llm_layer = 4 * h * h + 3 * h + 3 * h * f + 2 * h  # q k v o (+q k v biases), SwiGLU, norms
    llm = vocab * h * 2 + 32 * llm_layer + h  # embeddings, untied lm_head, final norm
    assert parameter_count(dims) == ENCODER + (1280 * h + h) + llm


def test_lora_parameters_count_every_matching_linear():
    dims = model_dims(QWEN2_AUDIO_7B)
    # q, k, v of the 32 audio layers (their output projection is out_proj, not o_proj)
    # and q, k, v, o of the 32 LLM layers (no grouped KV: all 4096 wide), rank 16.
    expected = 32 * 3 * 16 * (1280 + 1280) + 32 * 4 * 16 * (4096 + 4096)
    assert lora_parameters(dims, 16, ["q_proj", "k_proj", "v_proj", "o_proj"]) == expected


H, F, VOCAB = 1280, 5120, 51866
STEM = 128 * 3000 + 2 * H * 3000 + 3 * H * 1500


def whisper_bytes(text_tokens, cast_bytes, layers_trained=32, stem=STEM):
    """Whisper large-v3, full fine-tuning, one utterance, by the documented formula: the
    norms' inputs (2h a encoder layer, 3h a decoder one) and the loss's four logit copies
    in fp32, the rest in autocast's dtype (`cast_bytes`)."""
    s_enc, s_dec = 1500, text_tokens + 4  # Whisper's prefix
    fp32 = layers_trained * s_enc * 2 * H + 32 * s_dec * 3 * H + 4 * VOCAB * s_dec
    cast = (
        stem
        + layers_trained * s_enc * (7 * H + 2 * F)
        + 32 * s_dec * (11 * H + 2 * F)
        + 2 * H * 32 * s_enc  # cross-attention's keys and values
        + H * s_enc  # the encoder output they come from
    )
    return 4 * fp32 + cast_bytes * cast


def test_ddp_replicates_and_doubles_gradients_for_its_buckets():
    dims = model_dims(WHISPER_LARGE_V3)
    p = WHISPER_LARGE_V3_PARAMETERS
    estimate = estimate_memory(
        dims,
        per_device_batch_size=2,
        precision="bf16",
        text_tokens=241,
        world_size=8,
        ranks_per_pod=4,
    )
    device = estimate.device
    assert (device.weights, device.gradients, device.optimizer) == (4 * p, 2 * 4 * p, 8 * p)
    assert device.weight_casts == 2 * p
    assert estimate.activations_per_sample == whisper_bytes(241, cast_bytes=2)
    assert device.activations == 2 * whisper_bytes(241, cast_bytes=2)
    assert device.total == (4 + 8 + 8 + 2) * p + device.activations + GPU_RUNTIME
    host = estimate.host
    # Four ranks each load the fp32 model; the fp16 checkpoint is mapped once.
    assert host.total == 4 * (4 * p + HOST_RUNTIME) + 2 * p


def test_fsdp_divides_weights_gradients_and_states_by_the_world_size():
    dims = model_dims(WHISPER_LARGE_V3)
    p = WHISPER_LARGE_V3_PARAMETERS
    estimate = estimate_memory(
        dims,
        per_device_batch_size=1,
        precision="fp32",
        text_tokens=100,
        world_size=8,
        strategy="fsdp",
    )
    device = estimate.device
    assert (device.weights, device.gradients, device.optimizer) == (4 * p / 8, 4 * p / 8, p)
    assert device.weight_casts == 0
    # Activations are not sharded; fp32 takes 4 bytes an element.
    assert device.activations == whisper_bytes(100, cast_bytes=4)


def test_a_frozen_encoder_trains_and_keeps_nothing_of_it():
    dims = model_dims(WHISPER_LARGE_V3)
    estimate = estimate_memory(
        dims, per_device_batch_size=1, precision="bf16", text_tokens=100, frozen_encoder_layers=32
    )
    frozen = CONV1 + CONV2 + ENCODER_POSITIONS + 32 * ENCODER_LAYER
    assert estimate.trainable_parameters == WHISPER_LARGE_V3_PARAMETERS - frozen
    # No backward pass goes through the frozen encoder: no bf16 copies kept of it.
    assert estimate.device.weight_casts == 2 * (WHISPER_LARGE_V3_PARAMETERS - frozen)
    expected = whisper_bytes(100, cast_bytes=2, layers_trained=0, stem=0)
    assert estimate.activations_per_sample == expected


def test_gradient_checkpointing_keeps_layer_inputs_and_one_layer():
    dims = model_dims(WHISPER_LARGE_V3)
    full = estimate_memory(dims, per_device_batch_size=1, precision="bf16", text_tokens=100)
    checkpointed = estimate_memory(
        dims,
        per_device_batch_size=1,
        precision="bf16",
        text_tokens=100,
        gradient_checkpointing=True,
    )
    s_dec = 104
    # Every layer's input (fp32), and the widest layer's tensors: an encoder layer's.
    inputs = 4 * (32 * 1500 * H + 32 * s_dec * H)
    widest = 1500 * (4 * 2 * H + 2 * (7 * H + 2 * F))
    # What is outside the layers: no layer at all, nothing of the layers kept.
    layers = 32 * 1500 * (4 * 2 * H + 2 * (7 * H + 2 * F))
    layers += 32 * s_dec * (4 * 3 * H + 2 * (11 * H + 2 * F))
    outside = whisper_bytes(100, cast_bytes=2) - layers
    assert checkpointed.activations_per_sample == outside + inputs + widest
    assert checkpointed.activations_per_sample < full.activations_per_sample / 4


def test_lora_trains_the_adapters_only():
    dims = model_dims(QWEN2_AUDIO_7B)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj"]
    estimate = estimate_memory(
        dims, per_device_batch_size=1, precision="bf16", text_tokens=100, lora_rank=16,
        lora_targets=targets,
    )  # fmt: skip
    adapters = lora_parameters(dims, 16, targets)
    assert estimate.trainable_parameters == adapters
    device = estimate.device
    assert device.weights == 4 * (parameter_count(dims) + adapters)
    assert (device.gradients, device.optimizer) == (4 * adapters, 8 * adapters)
    # The frozen base's bf16 copies are kept for the backward pass too.
    assert device.weight_casts == 2 * (parameter_count(dims) + adapters)


def test_training_on_cpu_puts_the_device_share_on_the_host():
    dims = model_dims(WHISPER_LARGE_V3)
    estimate = estimate_memory(
        dims, per_device_batch_size=1, precision="fp32", text_tokens=100, on_gpu=False
    )
    assert estimate.device.runtime == 0
    assert estimate.host.model_per_rank == 0  # the training weights are that model
    p = WHISPER_LARGE_V3_PARAMETERS
    assert estimate.host.total == estimate.device.total + HOST_RUNTIME + 2 * p


def test_an_unknown_model_type_is_named():
    with pytest.raises(ValueError, match="model_type 'wav2vec2'"):
        model_dims({"model_type": "wav2vec2"})
    with pytest.raises(ValueError, match="d_model"):
        model_dims({**WHISPER_LARGE_V3, "d_model": None})
