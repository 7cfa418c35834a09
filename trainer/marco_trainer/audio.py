"""Reading audio for the models: mono float32 at the model's sample rate.

Anything that cannot become finite, non-empty audio raises :class:`AudioError`
with the file's name, so callers can skip it and count it.
"""

from __future__ import annotations

from math import gcd
from pathlib import Path

import numpy as np


class AudioError(ValueError):
    """A file that cannot be used as audio (unreadable, empty, non-finite)."""


def audio_duration(path: str | Path) -> float:
    """Duration in seconds from the header (cheap), or AudioError."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception as error:  # soundfile raises several types for corrupt files
        raise AudioError(f"{path}: unreadable audio ({error})") from error
    if info.frames <= 0 or info.samplerate <= 0:
        raise AudioError(f"{path}: empty audio")
    return info.frames / info.samplerate


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Mono float32 samples at ``sample_rate``."""
    import soundfile as sf
    from scipy.signal import resample_poly

    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:
        raise AudioError(f"{path}: unreadable audio ({error})") from error
    if data.size == 0:
        raise AudioError(f"{path}: empty audio")
    mono = data.mean(axis=1)
    if not np.isfinite(mono).all():
        raise AudioError(f"{path}: audio holds NaN or infinite samples")
    if rate != sample_rate:
        factor = gcd(int(rate), int(sample_rate))
        mono = resample_poly(mono, sample_rate // factor, rate // factor).astype(np.float32)
    return np.ascontiguousarray(mono, dtype=np.float32)
