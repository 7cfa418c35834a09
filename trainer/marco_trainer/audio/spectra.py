"""Short-time magnitude spectra of a signal's active frames: what the profile's spectral
metrics (features.py) and the channel measurement (channel.py) both read; and the
third-octave bands that the channel's long-term spectrum and the noise floor
(noise_floor.py) are reduced to and averaged over files in."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import fft

ACTIVE_FRAME_RANGE = 1e-5  # 50 dB below the loudest frame


@lru_cache(maxsize=16)
def _frame_constants(n_fft: int, rate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hann window, sample offsets within a frame, and bin frequencies of one frame size."""
    return (
        np.hanning(n_fft).astype(np.float32),
        np.arange(n_fft),
        np.fft.rfftfreq(n_fft, 1.0 / rate),
    )


def active_spectra(
    x: np.ndarray, rate: int, max_frames: int | None = None, frame_seconds: float = 0.032
) -> tuple[np.ndarray, np.ndarray]:
    """Magnitude spectra ``(frames, bins)`` of the active ~32 ms Hann frames, and their bin
    frequencies. ``max_frames`` keeps an evenly spaced subset (a bounded cost per file)."""
    n_fft = 1 << max(math.ceil(math.log2(frame_seconds * rate)), 4)
    hop = n_fft // 2
    window, offsets, freqs = _frame_constants(n_fft, rate)
    x = np.asarray(x, dtype=np.float32)
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    count = (len(x) - n_fft) // hop + 1
    if max_frames is not None and count > max_frames:
        # Frame k of np.linspace(0, count - 1, max_frames), gathered in one indexing step
        # (the same doubles as linspace computes, in plain Python: a few numbers).
        last = max_frames - 1
        spacing = (count - 1) / last if last else 0.0
        starts = [int(k * spacing) * hop for k in range(last)] + [(count - 1) * hop if last else 0]
        frames = x[np.array(starts)[:, None] + offsets]
    else:
        stride = x.strides[0]
        frames = np.lib.stride_tricks.as_strided(
            x, (count, n_fft), (hop * stride, stride), writeable=False
        )
    magnitude = np.abs(fft.rfft(frames * window, axis=1))
    energy = magnitude.sum(axis=1)
    active = energy > energy.max() * ACTIVE_FRAME_RANGE
    return magnitude[active], freqs


def third_octave_edges(centre: float) -> tuple[float, float]:
    """The lower and upper edge (Hz) of the third-octave band around ``centre``."""
    return centre / 2 ** (1 / 6), centre * 2 ** (1 / 6)


def mean_levels_db(files: list[list[float | None]]) -> list[float | None]:
    """Per band, the mean power (in dB, as the inputs) over the files that reach it; None
    for a band no file reaches (a file's band past its Nyquist rate is None)."""
    levels: list[float | None] = []
    for band in zip(*files, strict=True):
        values = [v for v in band if v is not None]
        power = math.fsum(10 ** (v / 10) for v in values) / len(values) if values else 0.0
        levels.append(10 * math.log10(power) if values else None)
    return levels


def median_levels_db(files: list[list[float | None]]) -> list[float | None]:
    """Per band, the median level (dB) over the files that reach it; None for a band no
    file reaches. The typical file, where a few voices far louder in a band would carry
    the mean power (``mean_levels_db``)."""
    levels: list[float | None] = []
    for band in zip(*files, strict=True):
        values = [v for v in band if v is not None]
        levels.append(float(np.median(values)) if values else None)
    return levels
