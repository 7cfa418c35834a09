"""Noise harvested from target audio: mixtures whose speech positions are known, so
"no speech in the harvest" is checked on the clean speech itself, not by the detector."""

from __future__ import annotations

import numpy as np
import pytest

from marco_trainer.audio import ops
from marco_trainer.audio.harvest import (
    FADE_SECONDS,
    MIN_RUN_SECONDS,
    bank,
    harvest,
    join,
    non_speech_segments,
)


def _mixture(speech: np.ndarray, rate: int, snr_db: float, beta: float, lead_s: float):
    """Noise only for ``lead_s``, the speech, noise only again; and the clean part alone."""
    lead = int(lead_s * rate)
    clean = np.concatenate([np.zeros(lead), speech, np.zeros(lead)]).astype(np.float32)
    # High-passed at 100 Hz as every microphone and line does: pink noise's sub-audio
    # swell would otherwise swing 20 ms frame powers by more than speech does.
    noise, _ = ops.butterworth(
        ops.coloured_noise(len(clean), rate, beta, seed=5), rate, "highpass", 100.0
    )
    active = np.mean(np.sort(speech**2)[len(speech) // 2 :])  # louder half of the samples
    gain = np.sqrt(active / 10 ** (snr_db / 10))
    return (clean + gain * noise).astype(np.float32), clean, (gain * noise).astype(np.float32), lead


#: A weak consonant or breath can sit 7 dB under the noise: no energy detector hears it,
#: and in the harvest it is part of the noise. The bound says no more than that.
UNDER_NOISE_DB = 5.0


@pytest.mark.parametrize(("snr_db", "beta"), [(20.0, 0.0), (10.0, 1.0)])
def test_harvested_stretches_hold_no_speech(speech_samples, snr_db, beta):
    x, rate = speech_samples
    x8, _ = ops.resample(x, rate, 8000)
    mixed, clean, noise, lead = _mixture(x8, 8000, snr_db, beta, lead_s=1.0)
    spans = non_speech_segments(mixed, 8000)
    assert spans
    # Inside every harvested stretch the speech that is there (a word's tail, a breath)
    # is at least ``UNDER_NOISE_DB`` under the noise, and no 20 ms of it is as loud as the noise.
    for start, end in spans:
        speech_power = np.mean(clean[start:end] ** 2)
        noise_power = np.mean(noise[start:end] ** 2)
        assert speech_power < 10 ** (-UNDER_NOISE_DB / 10) * noise_power, (start / 8000, end / 8000)
        frames = clean[start : start + (end - start) // 160 * 160].reshape(-1, 160)
        assert np.mean(frames**2, axis=1).max() < noise_power
    # And most of the noise-only lead-in and tail is found.
    covered = np.zeros(len(mixed), bool)
    for start, end in spans:
        covered[start:end] = True
    noise_only = np.r_[covered[: lead - 800], covered[len(mixed) - lead + 800 :]]
    assert noise_only.mean() > 0.8


def _as_stored(out: np.ndarray) -> np.ndarray:
    """``out`` peak-normalised and rounded to 16-bit PCM, as the scenario writes its files."""
    return (np.round(out / np.abs(out).max() * 32767) / 32767).astype(np.float32)


@pytest.mark.parametrize("snr_db", [0.0, 4.0, 8.0])
def test_a_car_cabins_rumble_does_not_hide_the_pauses(speech_samples, snr_db):
    """The benchmark's car channel itself (engine drone and road rumble under 400 Hz,
    cabin boom, hands-free microphone), stored as 16-bit PCM like its files."""
    from marco_demo import acoustics
    from marco_demo.scenario_channels import SCENARIO_RATE, CarChannel, car

    x, rate = speech_samples
    assert rate == SCENARIO_RATE
    lead = rate  # a second of the cabin alone before and after the words
    clean = np.concatenate([np.zeros(lead), x, np.zeros(lead)])
    channel = CarChannel(
        rpm=2200.0, engine_share=0.5, snr_db=snr_db, resonance_hz=90.0, boom_db=8.0, seed=1
    )
    out = car(clean, channel)
    # The channel is linear after the mix: its speech part is the clean speech through
    # the same boom and microphone, and the rest is the noise as the listener gets it.
    speech = acoustics.band_pass(acoustics.cabin_eq(clean, rate, 90.0, 8.0), rate, 40.0, 7000.0)
    peak = np.abs(out).max()
    mixed = _as_stored(out)
    speech, noise = speech / peak, (out - speech) / peak
    high = ops.butterworth(speech, rate, "highpass", 3400.0)[0]
    high_noise = ops.butterworth(noise, rate, "highpass", 3400.0)[0]
    spans = non_speech_segments(mixed, rate)
    covered = np.zeros(len(mixed), bool)
    for start, end in spans:
        covered[start:end] = True
        # The speech inside a harvested stretch is well under the noise there, over the
        # whole band and above the speech band alike (a fricative's hiss).
        speech_power = np.mean(speech[start:end] ** 2)
        assert speech_power < 10 ** (-UNDER_NOISE_DB / 10) * np.mean(noise[start:end] ** 2)
        assert np.mean(high[start:end] ** 2) < 10 ** (-UNDER_NOISE_DB / 10) * max(
            np.mean(high_noise[start:end] ** 2),
            2.0**-30,  # -90 dBFS: a floor for a band the noise leaves empty
        ), (start / rate, end / rate)
    margin = rate // 10
    noise_only = np.r_[covered[: lead - margin], covered[len(mixed) - lead + margin :]]
    assert noise_only.mean() > 0.8


def test_a_hiss_above_the_speech_band_is_not_harvested_as_noise(speech_samples):
    """An 's' (150 ms of noise above 5 kHz, 20 dB under the words) alone in the car's
    lead-in: it has nothing in 200-3400 Hz and is as flat as noise, so only its own band
    shows it. Harvested, the copies would get hiss the target's noise does not have."""
    from marco_demo.scenario_channels import CarChannel, car

    x, rate = speech_samples
    lead = rate
    rng = np.random.default_rng(4)
    hiss = ops.butterworth(rng.standard_normal(int(0.15 * rate)), rate, "highpass", 5000.0)[0]
    active = np.mean(np.sort(x**2)[len(x) // 2 :])
    hiss *= np.sqrt(active / 100 / np.mean(hiss**2))
    clean = np.concatenate([np.zeros(lead), x, np.zeros(lead)])
    at = lead // 2
    clean[at : at + len(hiss)] += hiss
    out = car(clean, CarChannel(rpm=1500.0, engine_share=0.7, snr_db=4.0, resonance_hz=60.0,
                                boom_db=4.0, seed=2))  # fmt: skip
    mixed = _as_stored(out)
    spans = non_speech_segments(mixed, rate)
    for start, end in spans:
        assert end <= at or start >= at + len(hiss), (start / rate, end / rate)
    # Not by harvesting nothing: most of the lead-in around the hiss is found.
    covered = np.zeros(len(mixed), bool)
    for start, end in spans:
        covered[start:end] = True
    margin = rate // 10
    around = np.r_[covered[: at - margin], covered[at + len(hiss) + margin : lead - margin]]
    assert around.mean() > 0.7


def test_harvest_joins_the_stretches_with_crossfades(speech_samples):
    x, rate = speech_samples
    mixed, *_ = _mixture(x, rate, 20.0, 0.5, lead_s=1.0)
    spans = non_speech_segments(mixed, rate)
    out = harvest(mixed, rate)
    fade = int(FADE_SECONDS * rate)
    # Every stretch is at least MIN_RUN_SECONDS, ten fades: every joint is a crossfade.
    assert MIN_RUN_SECONDS >= 2 * FADE_SECONDS
    joints = len(spans) - 1
    assert joints
    assert len(out) == sum(end - start for start, end in spans) - joints * fade
    first = spans[0][1] - spans[0][0]
    assert np.allclose(out[first // 2], mixed[spans[0][0] + first // 2])  # middles untouched


def test_joined_noise_keeps_its_power_through_every_joint():
    # Thirty 0.15 s pieces of white noise, as short car stretches are: no 20 ms frame of
    # the joined noise may dip (a faded-to-silence joint halves a frame's power).
    rate = 16000
    rng = np.random.default_rng(0)
    pieces = [rng.standard_normal(int(0.15 * rate)).astype(np.float32) for _ in range(30)]
    out = join(pieces, rate)
    size = int(0.02 * rate)
    frames = out[: len(out) // size * size].reshape(-1, size)
    powers = np.mean(frames.astype(np.float64) ** 2, axis=1)
    # 320 samples of unit white noise: a frame's power is 1 ± 0.08 (s.d.); 0.7 is 4 s.d.
    assert powers.min() > 0.7, powers.min()


def test_a_bank_of_files_at_different_levels_is_mixed_at_one_level():
    # Two files' harvests 20 dB apart: in the bank every 100 ms has the same power
    # within the noise's own variation (white noise: a few tenths of a dB).
    rate = 16000
    rng = np.random.default_rng(1)
    quiet, loud = (g * rng.standard_normal(rate).astype(np.float32) for g in (0.01, 0.1))
    out = bank([quiet, loud], rate)
    size = rate // 10
    frames = out[: len(out) // size * size].reshape(-1, size)
    levels = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1))
    assert levels.max() - levels.min() < 1.0, levels
    assert abs(float(np.mean(levels))) < 0.5  # unit RMS


def test_steady_noise_alone_gives_no_harvest():
    # Nothing but noise: no contrast, so no telling speech from noise; nothing is kept.
    noise = ops.coloured_noise(8000 * 3, 8000, 1.0, seed=1) * 0.1
    assert non_speech_segments(noise, 8000) == []
    assert len(harvest(noise, 8000)) == 0
