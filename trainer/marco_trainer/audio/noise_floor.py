"""The spectrum of a target's noise, read under its speech, and noise made to it.

Harvesting (``harvest.py``) needs pauses the detector can trust; a car's engine
never stops and is harmonic, so the detector calls it speech and nothing is
harvested. Its spectrum can still be read: in each frequency bin the quietest
frames of a file are the noise alone, because speech does not cover every band
all the time (the minimum-statistics idea of noise-PSD trackers). So:

1. power spectra of ~128 ms Hann frames (half overlap);
2. summed into third-octave bands from 25 Hz (an engine's firing frequency) to
   8 kHz and averaged over ``SMOOTH_FRAMES`` frames;
3. per band, the ``FLOOR_PERCENTILE``-th percentile over the frames: the floor,
   as dB relative to the floor's total power, so files of any level weigh alike
   when the profile averages them.

``shaped_noise`` makes Gaussian noise with that band spectrum (interpolated over
log-frequency), which the augmenter mixes in at the drawn SNR instead of 1/f^β
noise when no noise was harvested: a car target gets rumble where its engine
is, not pink noise over the whole speech band.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import fft

from marco_trainer.audio.spectra import third_octave_edges

#: 128 ms: bins 7.8 Hz apart at 16 kHz, so the 25-40 Hz bands each hold one.
FRAME_SECONDS = 0.128
FLOOR_PERCENTILE = 10.0
#: Frames averaged before the percentile (3 × 64 ms hops: 256 ms of audio).
SMOOTH_FRAMES = 3
#: Third-octave centres (Hz), 25 Hz to 8 kHz.
NOISE_BANDS_HZ: tuple[float, ...] = tuple(round(1000 * 2 ** (k / 3), 1) for k in range(-16, 10))


def _frames_power(x: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
    size = 1 << max(math.ceil(math.log2(FRAME_SECONDS * rate)), 4)
    hop = size // 2
    x = np.asarray(x, dtype=np.float64)
    if len(x) < size:
        x = np.pad(x, (0, size - len(x)))
    frames = np.lib.stride_tricks.sliding_window_view(x, size)[::hop]
    power = np.abs(fft.rfft(frames * np.hanning(size), axis=1)) ** 2
    return power, np.fft.rfftfreq(size, 1.0 / rate)


def noise_floor_bands(x: np.ndarray, rate: int) -> list[float | None]:
    """Noise-floor level per band of ``NOISE_BANDS_HZ``, dB re the floor's total power;
    None for a band past 95 % of the Nyquist rate or below the frame's resolution."""
    power, freqs = _frames_power(x, rate)
    if len(power) > SMOOTH_FRAMES:
        # A noise band's power varies from frame to frame (a chi-square with few degrees
        # of freedom in a narrow band), so a low percentile of it reads under its mean
        # (-9.8 dB for one bin) while a steady hum reads at its mean: smoothing over
        # frames first keeps both within ~2 dB of their mean.
        kernel = np.ones(SMOOTH_FRAMES) / SMOOTH_FRAMES
        power = np.apply_along_axis(np.convolve, 0, power, kernel, mode="valid")
    bands: list[float | None] = []
    for centre in NOISE_BANDS_HZ:
        low, high = third_octave_edges(centre)
        inside = (freqs >= low) & (freqs < high)
        if high > 0.95 * rate / 2 or not inside.any():
            bands.append(None)
        else:
            # The band's power per frame, then its floor over the frames.
            bands.append(float(np.percentile(power[:, inside].sum(axis=1), FLOOR_PERCENTILE)))
    total = sum(b for b in bands if b is not None)
    if total <= 0:
        return [None] * len(bands)
    return [None if b is None else 10 * math.log10(max(b / total, 1e-12)) for b in bands]


def shaped_noise(levels_db: list[float | None], length: int, rate: int, seed: int) -> np.ndarray:
    """Gaussian noise of unit power whose band levels are ``levels_db`` (per
    ``NOISE_BANDS_HZ``; None bands and frequencies past the last band are silent)."""
    known = [(c, v) for c, v in zip(NOISE_BANDS_HZ, levels_db, strict=True) if v is not None]
    if not known:
        raise ValueError("no band level to shape noise with")
    rng = np.random.default_rng(seed)
    size = fft.next_fast_len(length, real=True)
    freqs = np.fft.rfftfreq(size, 1.0 / rate)
    centres = np.log2([c for c, _ in known])
    # Power per hertz in each band, interpolated over log-frequency between centres.
    density = [
        10 ** (v / 10) / (third_octave_edges(c)[1] - third_octave_edges(c)[0]) for c, v in known
    ]
    log_density = np.interp(np.log2(np.maximum(freqs, 1.0)), centres, np.log10(density))
    amplitude = np.sqrt(10**log_density)
    low, high = third_octave_edges(known[0][0])[0], third_octave_edges(known[-1][0])[1]
    amplitude[(freqs < low) | (freqs > high)] = 0.0
    spectrum = amplitude * (rng.standard_normal(len(freqs)) + 1j * rng.standard_normal(len(freqs)))
    noise = fft.irfft(spectrum, n=size)[:length]
    return (noise / np.sqrt(np.mean(noise**2))).astype(np.float32)
