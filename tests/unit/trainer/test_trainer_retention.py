"""Keeping what the model knew (issue 16): LR warm-up, encoder freezing, SpecAugment.

Expectations are hand-worked (warm-up LRs, parameter counts of the tiny Whisper's
layers) or computed from first principles (the hypergeometric coverage of
SpecAugment's spans), never by the code under test.
"""

from __future__ import annotations

import json
from math import comb

import pytest
import torch

from marco_contract.options import FreezeOptions, SpecAugmentOptions
from marco_trainer.train.retention import freeze_encoder, warmup_factor
from tests.tiny_models import build_tiny_whisper

# -- warm-up -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "factor"),
    # 4 warm-up steps from 0.25: +0.1875 a step, then the cycle's LR.
    [(0, 0.25), (1, 0.4375), (2, 0.625), (3, 0.8125), (4, 1.0), (50, 1.0)],
)
def test_warm_up_rises_linearly_to_the_cycle_lr(step, factor):
    assert warmup_factor(step, warmup_steps=4, start_factor=0.25) == pytest.approx(factor)


def test_no_warm_up_steps_means_the_cycle_lr_from_the_first_step():
    assert warmup_factor(0, warmup_steps=0, start_factor=0.1) == 1.0


# -- freezing --------------------------------------------------------------------------

# The tiny Whisper below: d_model 32, feed-forward 64, 80 mel bins, 2 encoder layers.
CONV1 = 80 * 32 * 3 + 32  # kernel 3, bias
CONV2 = 32 * 32 * 3 + 32
ATTENTION = 4 * 32 * 32 + 3 * 32  # q, k, v, out; k_proj has no bias
LAYER = ATTENTION + 2 * 64 + (32 * 64 + 64) + (64 * 32 + 32)  # + 2 layer norms, fc1, fc2
FINAL_NORM = 2 * 32


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory):
    return build_tiny_whisper(tmp_path_factory.mktemp("tiny-whisper-2"), layers=2)


def load_whisper(path):
    from transformers import WhisperForConditionalGeneration

    return WhisperForConditionalGeneration.from_pretrained(path)


def trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


POSITIONS = 150 * 32  # max_source_positions (half the 300 frames) × d_model


@pytest.mark.parametrize(
    ("options", "frozen"),
    [
        (FreezeOptions(), 0),
        (FreezeOptions(encoder_layers=1), CONV1 + CONV2 + POSITIONS + LAYER),
        (FreezeOptions(encoder_layers=2), CONV1 + CONV2 + POSITIONS + 2 * LAYER),
        (FreezeOptions(encoder=True), CONV1 + CONV2 + POSITIONS + 2 * LAYER + FINAL_NORM),
    ],
    ids=["none", "stem-and-1-layer", "stem-and-2-layers", "encoder"],
)
def test_freezing_turns_off_exactly_the_hand_counted_parameters(whisper_dir, options, frozen):
    model = load_whisper(whisper_dir)
    # WhisperEncoder freezes its sinusoidal positions when built, but a model loaded with
    # from_pretrained (transformers 5.24) has them trainable again: counted only if so.
    if not model.model.encoder.embed_positions.weight.requires_grad and frozen:
        frozen -= POSITIONS
    before = trainable(model)
    assert freeze_encoder(model, options) == frozen
    assert before - trainable(model) == frozen
    # The decoder trains in every case.
    assert all(p.requires_grad for n, p in model.named_parameters() if ".decoder." in n)


def test_freezing_more_layers_than_the_encoder_has_names_the_flag(whisper_dir):
    with pytest.raises(ValueError, match="--freeze-encoder-layers 3: the encoder has 2 layers"):
        freeze_encoder(load_whisper(whisper_dir), FreezeOptions(encoder_layers=3))


# -- SpecAugment -----------------------------------------------------------------------

FRAMES = 300  # the tiny model's 3 s window at 10 ms


def load_asr(path):
    from marco_trainer.models import load_asr_model

    return load_asr_model(str(path), family="encoder-decoder", language="en", trainable=True)


def encoder_states(asr, features: torch.Tensor, train: bool) -> torch.Tensor:
    model = asr.model
    model.train(train)
    start = model.config.decoder_start_token_id
    with torch.no_grad():
        out = model(
            input_features=features.clone(),
            decoder_input_ids=torch.tensor([[start]] * len(features)),
        )
    return out.encoder_last_hidden_state


def features(batch: int, seed: int = 0) -> torch.Tensor:
    # Gaussian values are never exactly 0: a zero marks a mask.
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 80, FRAMES, generator=generator)


def test_spec_augment_on_masks_in_training_mode_only(whisper_dir):
    asr = load_asr(whisper_dir)
    asr.set_spec_augment(SpecAugmentOptions(enabled=True, mask_time_prob=0.3))
    x = features(2)
    assert not torch.equal(encoder_states(asr, x, train=True), encoder_states(asr, x, train=False))
    # Evaluation mode is the plain model: two passes agree.
    assert torch.equal(encoder_states(asr, x, train=False), encoder_states(asr, x, train=False))


def test_spec_augment_off_leaves_training_mode_identical_even_if_the_checkpoint_had_it_on(
    tmp_path,
):
    path = build_tiny_whisper(tmp_path / "model")
    config = json.loads((path / "config.json").read_text())
    config.update(apply_spec_augment=True, mask_time_prob=0.5)
    (path / "config.json").write_text(json.dumps(config))
    asr = load_asr(path)
    assert asr.model.config.apply_spec_augment is True
    asr.set_spec_augment(SpecAugmentOptions(enabled=False))
    x = features(2)
    # The tiny model has no dropout: without masks, training and evaluation agree exactly.
    assert torch.equal(encoder_states(asr, x, train=True), encoder_states(asr, x, train=False))


def expected_coverage(length: int, span: int, spans: int) -> float:
    """Mean share of positions covered by ``spans`` spans of ``span`` positions whose
    starts are drawn without replacement from the ``length - span + 1`` possible ones."""
    starts = length - span + 1
    covered = 0.0
    for position in range(length):
        # Starts whose span covers this position.
        covering = min(position, starts - 1) - max(0, position - span + 1) + 1
        covered += 1 - comb(starts - covering, spans) / comb(starts, spans)
    return covered / length


def test_spec_augment_masks_the_expected_share_of_frames_and_bins(whisper_dir):
    asr = load_asr(whisper_dir)
    # Time: 0.3 × 300 / 10 = 9 spans of 10 frames; bins: 0.25 × 80 / 5 = 4 spans of 5 bins
    # (whole numbers, so Hugging Face's probabilistic rounding always gives these counts).
    options = SpecAugmentOptions(
        enabled=True,
        mask_time_prob=0.3,
        mask_time_length=10,
        mask_feature_prob=0.25,
        mask_feature_length=5,
    )
    asr.set_spec_augment(options)
    seen: list[torch.Tensor] = []
    encoder = asr.model.get_encoder()
    hook = encoder.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach().clone()))
    try:
        for seed in range(25):
            encoder_states(asr, features(8, seed), train=True)
    finally:
        hook.remove()
    masked = torch.cat(seen) == 0  # (utterances, bins, frames)
    # A frame masked in time is zero in all 80 bins (bin masks cover 20 at most); a bin
    # masked in frequency is zero in all 300 frames (time masks cover 90 at most).
    frames = masked.all(dim=1).sum(dim=1)  # masked frames per utterance
    bins = masked.all(dim=2).sum(dim=1)
    for count, length, span, spans in [(frames, FRAMES, 10, 9), (bins, 80, 5, 4)]:
        share = count.double() / length
        expected = expected_coverage(length, span, spans)
        tolerance = 4 * float(share.std()) / len(share) ** 0.5
        assert abs(float(share.mean()) - expected) < tolerance, (length, expected)
        # Every utterance: at least one whole span, at most all spans disjoint.
        assert span <= int(count.min()) and int(count.max()) <= spans * span
    # Nothing else is zeroed: every zero lies in a masked frame or a masked bin.
    explained = masked.all(dim=1, keepdim=True) | masked.all(dim=2, keepdim=True)
    assert not (masked & ~explained).any()


def test_checkpoints_keep_the_pretrained_spec_augment_settings(whisper_dir, tmp_path):
    asr = load_asr(whisper_dir)
    asr.set_spec_augment(SpecAugmentOptions(enabled=True, mask_time_prob=0.3))
    asr.save(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())
    # WhisperConfig's defaults, as build_tiny_whisper saved them.
    assert (saved["apply_spec_augment"], saved["mask_time_prob"]) == (False, 0.05)
    # ... and training goes on with the run's settings.
    assert (asr.model.config.apply_spec_augment, asr.model.config.mask_time_prob) == (True, 0.3)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            SpecAugmentOptions(enabled=True, mask_time_length=301),
            "--spec-augment-mask-time-length 301: longer than the model's 300 input frames",
        ),
        (
            SpecAugmentOptions(enabled=True, mask_feature_length=81),
            "--spec-augment-mask-feature-length 81: longer than the model's 80 input mel bins",
        ),
    ],
    ids=["time", "feature"],
)
def test_a_mask_longer_than_its_axis_is_refused_at_start_by_flag(whisper_dir, options, message):
    asr = load_asr(whisper_dir)
    with pytest.raises(ValueError) as error:
        asr.set_spec_augment(options)
    assert str(error.value) == message
