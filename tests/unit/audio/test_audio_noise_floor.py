"""The target's noise spectrum read under its speech, and noise made to a spectrum.

Expectations are Welch spectra (scipy) of the noise alone, which the code under
test never sees: it reads the mixture, or makes the noise.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import signal

from marco_trainer.audio import ops
from marco_trainer.audio.noise_floor import (
    NOISE_BANDS_HZ,
    noise_floor_bands,
    shaped_noise,
)
from marco_trainer.audio.spectra import mean_levels_db, third_octave_edges


def welch_bands(x: np.ndarray, rate: int) -> list[float | None]:
    """Band powers of ``x`` by Welch's method, dB re their total (bands as the code's)."""
    freqs, density = signal.welch(x, rate, nperseg=4096)
    powers: list[float | None] = []
    for centre in NOISE_BANDS_HZ:
        low, high = third_octave_edges(centre)
        inside = (freqs >= low) & (freqs < high)
        powers.append(
            float(density[inside].sum()) if inside.any() and high < 0.95 * rate / 2 else None
        )
    total = sum(p for p in powers if p is not None)
    return [None if p is None else 10 * math.log10(p / total) for p in powers]


def engine(length: int, rate: int) -> np.ndarray:
    """An engine's hum: harmonics of 50 Hz falling 6 dB each, and low-passed rumble."""
    t = np.arange(length) / rate
    hum = sum(0.5**k * np.sin(2 * np.pi * 50 * (k + 1) * t) for k in range(4))
    rumble, _ = ops.butterworth(
        ops.coloured_noise(length, rate, 1.0, seed=3), rate, "lowpass", 300.0
    )
    return (hum + 0.5 * rumble / np.std(rumble)).astype(np.float32)


def test_the_noise_under_speech_is_read_as_the_noise_alone(speech_samples):
    speech, rate = speech_samples
    speech = np.concatenate([speech, speech, speech])
    noise = engine(len(speech), rate)
    noise *= np.sqrt(np.mean(speech**2) / np.mean(noise**2)) * 10 ** (-5 / 20)  # 5 dB SNR
    read = noise_floor_bands(speech + noise, rate)
    truth = welch_bands(noise, rate)
    loudest = max(v for v in truth if v is not None)
    compared = 0
    for band, got, want in zip(NOISE_BANDS_HZ, read, truth, strict=True):
        # Where the noise is (within 20 dB of its loudest band), the floor is the noise.
        if want is not None and want > loudest - 20:
            assert got is not None and abs(got - want) <= 4.0, (band, got, want)
            compared += 1
    assert compared >= 4
    # And where the noise is not, speech does not fill the floor in: 1-4 kHz stays low.
    mid = [v for c, v in zip(NOISE_BANDS_HZ, read, strict=True) if 1000 <= c <= 4000]
    assert max(v for v in mid if v is not None) < loudest - 20


@pytest.mark.parametrize("rate", [16000, 8000])
def test_shaped_noise_has_the_asked_spectrum_and_unit_power(rate):
    asked: list[float | None] = [
        -10.0 - 0.8 * abs(k - 8) if c < 0.45 * rate else None for k, c in enumerate(NOISE_BANDS_HZ)
    ]
    asked[0] = None  # a band the target's files did not reach
    noise = shaped_noise(asked, 20 * rate, rate, seed=1)
    assert np.mean(noise.astype(np.float64) ** 2) == pytest.approx(1.0, rel=1e-3)
    got = welch_bands(noise, rate)
    known = [k for k, v in enumerate(asked) if v is not None and got[k] is not None]
    # Both are relative to their totals: compare shapes after removing the mean offset.
    offset = np.mean([got[k] - asked[k] for k in known])  # type: ignore[operator]
    for k in known[1:-1]:  # the end bands' edges are cut
        assert abs(got[k] - offset - asked[k]) <= 1.5, (NOISE_BANDS_HZ[k], got[k], asked[k])  # type: ignore[operator]


def test_shaped_noise_needs_a_level():
    with pytest.raises(ValueError, match="no band level"):
        shaped_noise([None] * len(NOISE_BANDS_HZ), 1000, 16000, seed=0)


def test_the_profile_averages_powers_over_the_files_that_reach_a_band():
    a = [-3.0, None, -10.0]
    b = [-6.0, -1.0, None]
    mean = mean_levels_db(
        [a + [None] * (len(NOISE_BANDS_HZ) - 3), b + [None] * (len(NOISE_BANDS_HZ) - 3)]
    )
    assert mean[0] == pytest.approx(10 * math.log10((10**-0.3 + 10**-0.6) / 2))
    assert mean[1] == pytest.approx(-1.0) and mean[2] == pytest.approx(-10.0)
    assert mean[3:] == [None] * (len(NOISE_BANDS_HZ) - 3)
