"""One equaliser for the whole augmented set (``eq_calibration``): it recovers a channel
the copies never went through, and it leaves each voice its own spectrum. Checked with
scipy's frequency response of the channel and Welch spectra, not the profile's own
band measurement."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from marco_demo.synth import Voice, speak
from marco_trainer.audio import ops
from marco_trainer.audio.channel import THIRD_OCTAVES_HZ
from marco_trainer.audio.eq_calibration import (
    band_levels_of,
    calibrate_eq,
    correction_db,
)
from marco_trainer.audio.spectra import median_levels_db

SENTENCES = (
    "thank you for calling. please hold, while i look up your account.",
    "the meeting moved to thursday afternoon in the large room.",
    "turn left at the next junction, then keep to the right lane.",
    "your parcel left the depot this morning and arrives tomorrow.",
)
VOICES = ("kal16", "slt", "awb", "rms")
#: The bands the checks read: inside the speech band, above the pitch region the
#: equaliser leaves alone (EQ_LOW_HZ).
CHECKED = [i for i, c in enumerate(THIRD_OCTAVES_HZ) if 315 <= c <= 3150]


@pytest.fixture(scope="module")
def voices(tmp_path_factory) -> list[tuple[np.ndarray, int]]:
    """Four talkers, four sentences: a small set whose spectra differ from file to file."""
    import soundfile as sf

    folder = tmp_path_factory.mktemp("eq-voices")
    out = []
    for k, (sentence, voice) in enumerate(zip(SENTENCES, VOICES, strict=True)):
        path = speak(sentence, folder / f"{k}.wav", Voice("flite", voice))
        data, rate = sf.read(str(path), dtype="float32")
        out.append((data, rate))
    return out


def handset(x: np.ndarray) -> np.ndarray:
    """A made-up channel: a resonance at 1.6 kHz, +9 dB, and a gentle low shelf cut."""
    b, a = signal.iirpeak(1600, 1.5, fs=16000)
    lifted = x + (10 ** (9 / 20) - 1) * signal.lfilter(b, a, x)
    low = signal.butter(1, 400, "highpass", fs=16000, output="sos")
    return (0.5 * lifted + 0.5 * signal.sosfilt(low, lifted)).astype(np.float32)


def handset_response_db(freqs: np.ndarray) -> np.ndarray:
    """``handset``'s magnitude response, from scipy's own freqz."""
    b, a = signal.iirpeak(1600, 1.5, fs=16000)
    _, peak = signal.freqz(b, a, worN=freqs, fs=16000)
    sos = signal.butter(1, 400, "highpass", fs=16000, output="sos")
    _, low = signal.sosfreqz(sos, worN=freqs, fs=16000)
    lifted = 1 + (10 ** (9 / 20) - 1) * peak
    return 20 * np.log10(np.abs(0.5 * lifted + 0.5 * low * lifted))


def equaliser_only(index: int, audio: np.ndarray, rate: int, gains: list[float]):
    return ops.equalise(audio, rate, list(THIRD_OCTAVES_HZ), gains)


def welch_bands(x: np.ndarray, rate: int) -> np.ndarray:
    """Welch power in each checked third-octave band, dB re their mean."""
    freqs, power = signal.welch(x, rate, nperseg=2048)
    levels = []
    for i in CHECKED:
        c = THIRD_OCTAVES_HZ[i]
        inside = (freqs >= c / 2 ** (1 / 6)) & (freqs < c * 2 ** (1 / 6))
        levels.append(10 * np.log10(power[inside].mean()))
    levels = np.array(levels)
    return levels - levels.mean()


def test_the_gains_are_the_channel_the_target_went_through(voices):
    # The target: the same talkers through the handset. The set's gains must be the
    # handset's response (its shape: both are read against the speech band's level).
    target = median_levels_db([band_levels_of(handset(x), r) for x, r in voices])
    eq = calibrate_eq(voices, equaliser_only, target)
    assert eq is not None and eq.utterances == 4
    gains = np.array(eq.gains_db)[CHECKED]
    truth = handset_response_db(np.array(THIRD_OCTAVES_HZ))[CHECKED]
    error = (gains - gains.mean()) - (truth - truth.mean())
    assert np.max(np.abs(error)) < 1.5, np.round(error, 2)
    # And the copies' mean spectrum, by Welch, lands on the target's.
    want = np.mean([welch_bands(handset(x), r) for x, r in voices], axis=0)
    flat = np.mean([welch_bands(x, r) for x, r in voices], axis=0)
    got = np.mean([welch_bands(*equaliser_only(0, x, r, eq.gains_db)) for x, r in voices], axis=0)
    assert np.sqrt(np.mean((got - want) ** 2)) < 0.3 * np.sqrt(np.mean((flat - want) ** 2))
    assert eq.residual_db() < eq.flat_residual_db()


def test_every_voice_keeps_its_own_spectrum(voices):
    # A target unlike any of them (tilted up 6 dB per octave above 1 kHz). One equaliser
    # moves all four the same way, so how they differ from each other stays; fitting each
    # to the target's mean would have made them alike.
    sos = signal.butter(1, 1000, "highpass", fs=16000, output="sos")
    target = median_levels_db(
        [band_levels_of((x + 2 * signal.sosfilt(sos, x)).astype(np.float32), r) for x, r in voices]
    )
    eq = calibrate_eq(voices, equaliser_only, target)
    assert eq is not None and max(abs(g) for g in eq.gains_db) > 3
    before = np.array([welch_bands(x, r) for x, r in voices])
    after = np.array([welch_bands(*equaliser_only(0, x, r, eq.gains_db)) for x, r in voices])
    # Each voice's difference from the others' mean, band by band, is kept (within the
    # filter's smearing at the edge of the flat region) ...
    moved = (after - after.mean(axis=0)) - (before - before.mean(axis=0))
    assert np.max(np.abs(moved)) < 1.0, np.round(moved, 2)
    # ... where fitting each voice to the target on its own moves them by several dB.
    alone = []
    for x, r in voices:
        own = calibrate_eq([(x, r)], equaliser_only, target)
        assert own is not None
        alone.append(welch_bands(*equaliser_only(0, x, r, own.gains_db)))
    fitted = np.array(alone)
    refit = (fitted - fitted.mean(axis=0)) - (before - before.mean(axis=0))
    assert np.max(np.abs(refit)) > 3 * np.max(np.abs(moved))


def test_the_correction_is_smoothed_over_the_neighbours_that_have_a_level():
    # raw = -2, 3, none (no target), none (no copy), 4, 8. Weights ¼ ½ ¼ over the bands
    # that have a value, renormalised: band 0: (½·(-2) + ¼·3) / ¾ = -1/3; band 1:
    # (¼·(-2) + ½·3) / ¾ = 4/3; band 4: (½·4 + ¼·8) / ¾ = 16/3; band 5: (¼·4 + ½·8) / ¾ = 20/3.
    got = correction_db([0.0, 4.0, None, 2.0, 5.0, 9.0], [2.0, 1.0, 1.0, None, 1.0, 1.0])
    assert got == pytest.approx([-1 / 3, 4 / 3, 0.0, 0.0, 16 / 3, 20 / 3])


def test_nothing_to_calibrate_on_is_none_and_a_wrong_grid_is_refused(voices):
    bands = len(THIRD_OCTAVES_HZ)
    assert calibrate_eq([], equaliser_only, [0.0] * bands) is None
    assert calibrate_eq(voices, equaliser_only, [None] * bands) is None
    with pytest.raises(ValueError, match="3 values for 20 bands"):
        calibrate_eq(voices, equaliser_only, [0.0, 1.0, 2.0])


def test_the_median_file_per_band_leaves_out_bands_a_file_does_not_reach():
    # Band 0: 1, 5, 30 → 5 (a mean of powers would sit near 25); band 1: only two files
    # reach it (an 8 kHz file stops short) → the mean of 2 and 4; band 2: none.
    files = [[1.0, 2.0, None], [5.0, 4.0, None], [30.0, None, None]]
    assert median_levels_db(files) == [5.0, 3.0, None]


def test_the_calibrations_sample_every_voice_of_a_list_written_speaker_by_speaker():
    # 400 lines cycling four voices, as the scenarios' source lists are: every 8th, 16th
    # or 33rd line (the old stride for 48, 24 and 12 utterances) is one voice, or three.
    from pathlib import Path

    from marco_trainer.audio.cli_augment import calibration_order
    from marco_trainer.audio.inputs import Source

    speakers = ("slt", "rms", "andy", "annie")
    sources = [
        Source(f"train/{i:05d}-{speakers[i % 4]}.wav", Path(f"/data/{i}.wav")) for i in range(400)
    ]
    assert {s.key.rsplit("-", 1)[1] for s in sources[::8][:48]} == {"slt.wav"}
    for count in (12, 24, 48):
        picked = calibration_order(sources)[:count]
        voices = [s.key.rsplit("-", 1)[1].removesuffix(".wav") for s in picked]
        assert set(voices) == set(speakers), (count, voices)
    # The same picks whatever order the lines come in (every shard reads the whole list).
    shuffled = sources[::-1][200:] + sources[::-1][:200]
    assert calibration_order(shuffled)[:24] == calibration_order(sources)[:24]
