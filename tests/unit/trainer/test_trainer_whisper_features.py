"""Whisper log-mel computed on the audible frames only equals the extractor's full window."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import WhisperFeatureExtractor

from marco_trainer.models.whisper_features import window_log_mel


@pytest.mark.parametrize("window_seconds", [3, 10, 30])
def test_short_path_is_bit_identical_to_the_full_window(hello_wav, window_seconds):
    speech, rate = sf.read(hello_wav, dtype="float32")
    extractor = WhisperFeatureExtractor(feature_size=80, chunk_length=window_seconds)
    # Clips of different lengths in one batch, a quiet one, and one a hop off a multiple.
    clips = [speech[: rate // 2], speech[: rate + 37], 0.01 * speech[: int(1.4 * rate)]]
    fast = window_log_mel(extractor, clips, rate)
    full = extractor(clips, sampling_rate=rate, return_tensors="pt").input_features
    assert fast is not None and fast.shape == full.shape
    assert torch.equal(fast, full)


def test_clips_that_fill_the_window_or_dither_take_the_extractor_path(hello_wav):
    speech, rate = sf.read(hello_wav, dtype="float32")
    extractor = WhisperFeatureExtractor(feature_size=80, chunk_length=3)
    long_clip = np.tile(speech, 3)[: 3 * rate - 100]  # no silent frame left to repeat
    assert window_log_mel(extractor, [speech[:rate], long_clip], rate) is None
    dithered = WhisperFeatureExtractor(feature_size=80, chunk_length=3, dither=1e-4)
    assert window_log_mel(dithered, [speech[:rate]], rate) is None
