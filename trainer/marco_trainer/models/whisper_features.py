"""Whisper's log-mel features without transforming the window's silence.

Whisper's feature extractor pads every clip with zeros to its window (30 s)
and transforms all of it: for a 3 s clip, nine tenths of the STFT and mel work
is spent on zeros, and every frame that sees only zeros comes out as the same
column (the floor ``max − 8`` of that clip's log spectrum, scaled). Here the
extractor itself runs on the clips padded only until a few frames of pure
silence exist, and the last (silent) column is repeated to fill the window.
Each kept frame sees the same samples as in the full window, so the result is
the extractor's own, bit for bit (a test compares them), 4× to 15× sooner.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from transformers import WhisperFeatureExtractor


def window_log_mel(
    extractor: WhisperFeatureExtractor, audios: list[np.ndarray], sampling_rate: int
) -> torch.Tensor | None:
    """``extractor(audios).input_features`` for a ``WhisperFeatureExtractor``, or None
    where the shortcut does not hold (dither adds noise to the silence; a clip too
    close to the window's length has no silent frame to repeat)."""
    if getattr(extractor, "dither", 0.0) or not audios:
        return None
    hop, n_fft = int(extractor.hop_length), int(extractor.n_fft)
    longest = max(len(audio) for audio in audios)
    # The last kept frame must see zeros only, including the reflection stft adds
    # past the end (n_fft / 2): n_fft + one hop of zeros after the longest clip.
    samples = -(-(longest + n_fft + hop) // hop) * hop
    if samples >= int(extractor.n_samples):
        return None
    padded = [
        np.pad(np.asarray(audio, dtype=np.float32), (0, samples - len(audio))) for audio in audios
    ]
    short = extractor(
        padded, sampling_rate=sampling_rate, return_tensors="pt", padding="longest"
    ).input_features
    frames = int(extractor.nb_max_frames)
    silent = short[..., -1:].expand(*short.shape[:-1], frames - short.shape[-1])
    return torch.cat([short, silent], dim=-1)
