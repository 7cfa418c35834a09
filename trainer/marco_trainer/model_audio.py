"""Audio as the models take it: mono float32 at the model's sample rate.

Reading goes through the shared reader (:mod:`marco_trainer.audio.io`), so a
file refused here is refused for the same reason, counted the same way, as in
the profile and augment stages. Unlike those stages, silent or clipped speech
is still transcribed and trained on: it is data, not a broken file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from marco_trainer.audio.io import AudioRejected, downmix, probe, read_audio

#: What the trainer catches: a file that cannot be used as audio (reason + detail).
AudioError = AudioRejected


def audio_duration(path: str | Path) -> float:
    """Duration in seconds from the header (cheap), or :class:`AudioError`."""
    info = probe(path)
    if info.frames <= 0 or info.sample_rate <= 0:
        raise AudioRejected("empty", f"{path}: no samples")
    return info.duration


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Mono float32 samples at ``sample_rate``: channels averaged like Whisper's loader,
    unless they cancel (:func:`~marco_trainer.audio.io.downmix`, as the audio stages do)."""
    from marco_trainer.audio.ops import resample

    data, info = read_audio(path)
    mono, _ = resample(downmix(data), info.sample_rate, sample_rate)
    return np.ascontiguousarray(mono, dtype=np.float32)
