"""The pure operators, the parameter drawing and the Eq. 3 composition."""

from __future__ import annotations

import numpy as np
import pytest

from marco_trainer.audio import chain, ops
from marco_trainer.audio.assets import Assets, simulate_rirs
from marco_trainer.audio.chain import apply_chain
from marco_trainer.audio.features import (
    FileMetrics,
    active_spectra,
    estimate_snr,
    integrated_loudness,
    mean_rolloff,
    spectral_shape,
)
from marco_trainer.audio.params import (
    ChainParams,
    FilterStep,
    draw_params,
    reverb_probability,
    utterance_rng,
)
from marco_trainer.audio.profile import build_profile
from marco_trainer.audio.telephony import apply_telephony, draw_telephony


def _band_energy_share(x: np.ndarray, rate: int, above_hz: float) -> float:
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    return float(spectrum[freqs > above_hz].sum() / spectrum.sum())


def test_quantize_pcm_keeps_2_to_the_bits_levels():
    x = np.linspace(-1, 1, 10000, dtype=np.float32)
    y, _ = ops.quantize(x, 16000, "pcm", 4)
    assert len(np.unique(y)) <= 16
    assert np.max(np.abs(y - x)) <= 1 / 8 + 1e-6


def test_mulaw_is_finer_near_zero_than_8_bit_pcm():
    x = np.linspace(-0.01, 0.01, 1000, dtype=np.float32)
    mulaw, _ = ops.quantize(x, 8000, "mulaw", 8)
    pcm, _ = ops.quantize(x, 8000, "pcm", 8)
    assert np.abs(mulaw - x).mean() < np.abs(pcm - x).mean() / 4


def test_resample_down_and_up_removes_the_upper_band(speech_samples):
    x, rate = speech_samples
    narrow, mid = ops.resample(x, rate, 8000)
    back, out = ops.resample(narrow, mid, rate)
    assert (mid, out) == (8000, rate)
    assert abs(len(back) - len(x)) <= 1
    assert _band_energy_share(x, rate, 4200) > 1e-3
    assert _band_energy_share(back, rate, 4200) < 1e-5


@pytest.mark.parametrize("snr_db", [5.0, 15.0, 25.0])
def test_add_noise_hits_the_snr_the_estimator_reads(speech_samples, snr_db):
    x, rate = speech_samples
    noise = ops.coloured_noise(len(x), rate, 0.0, seed=3)
    y, _ = ops.add_noise(x, rate, noise, snr_db)
    assert estimate_snr(y, rate) == pytest.approx(snr_db, abs=1.5)


def test_coloured_noise_is_unit_power_pinker_and_band_limited():
    white = ops.coloured_noise(16000, 16000, 0.0, seed=1)
    pink = ops.coloured_noise(16000, 16000, 1.0, seed=1, bandwidth_hz=4000)
    assert np.mean(pink**2) == pytest.approx(1.0, rel=1e-3)
    assert spectral_shape(pink, 16000)[0] < 0.5 * spectral_shape(white, 16000)[0]
    assert _band_energy_share(pink, 16000, 4100) < 1e-6


def test_gain_to_loudness_hits_the_target_or_stops_at_the_peak(speech_samples):
    x, rate = speech_samples
    y, _ = ops.gain_to_loudness(x, rate, -30.0)
    assert integrated_loudness(y, rate) == pytest.approx(-30.0, abs=0.01)
    loud, _ = ops.gain_to_loudness(x, rate, -1.0)
    assert np.max(np.abs(loud)) <= 0.99 + 1e-6
    assert integrated_loudness(loud, rate) < -1.0


def test_butterworth_low_and_high_pass(speech_samples):
    x, rate = speech_samples
    low, _ = ops.butterworth(x, rate, "lowpass", 1000.0)
    high, _ = ops.butterworth(x, rate, "highpass", 2000.0)
    assert _band_energy_share(low, rate, 2000) < 0.01
    assert _band_energy_share(high, rate, 1000) > 0.9


def test_mulaw_clips_out_of_range_input_to_the_end_codes():
    x = np.array([-3.0, -1.0, -0.5, 0.0, 0.25, 1.0, 2.5], dtype=np.float32)
    y, _ = ops.quantize(x, 8000, "mulaw", 8)
    clipped, _ = ops.quantize(np.clip(x, -1.0, 1.0), 8000, "mulaw", 8)
    np.testing.assert_array_equal(y, clipped)
    assert y[0] == y[1] < y[2] < y[3] < y[4] < y[5] == y[6]
    assert y.dtype == np.float32


def test_reverberation_keeps_length_and_fills_the_pauses(speech_samples):
    x, rate = speech_samples
    rir = simulate_rirs(1, rate, seed=0)[0]
    y, _ = ops.reverberate(x, rate, rir)
    assert len(y) == len(x)
    assert estimate_snr(y, rate) < estimate_snr(x, rate) - 5


def _profile(**ranges) -> object:
    records = []
    for i in range(20):
        u = i / 19
        records.append(
            FileMetrics(
                path=f"f{i}.wav",
                sample_rate=8000 if i % 4 else 16000,
                bit_depth=8 if i % 2 else 16,
                subtype="ULAW" if i % 2 else "PCM_16",
                channels=1,
                duration_s=3.0,
                snr_db=ranges.get("snr", (10, 20))[0] + u * 10,
                lufs=-30 + 5 * u,
                centroid_hz=1200 + 300 * u,
                rolloff_hz=2200 + 400 * u,
            )
        )
    return build_profile(records)


def test_parameters_depend_on_seed_key_and_copy_only():
    profile = _profile()
    a = draw_params(profile, utterance_rng(7, "a.wav", 0), 16000, num_rirs=4)
    assert a == draw_params(profile, utterance_rng(7, "a.wav", 0), 16000, num_rirs=4)
    others = [
        draw_params(profile, utterance_rng(*k), 16000, num_rirs=4)
        for k in ((8, "a.wav", 0), (7, "b.wav", 0), (7, "a.wav", 1))
    ]
    assert all(o != a for o in others)


def test_parameters_stay_in_the_profile_ranges():
    profile = _profile()
    drawn = [draw_params(profile, utterance_rng(0, str(i), 0), 16000) for i in range(200)]
    snr, lufs = profile.metric("snr_db"), profile.metric("lufs")
    assert {p.resample.sample_rate for p in drawn} == {8000, 16000}
    assert {p.resample.encoding for p in drawn} == {"mulaw", "pcm"}
    assert all(snr.percentile(5) <= p.noise.snr_db <= snr.percentile(95) for p in drawn)
    assert all(lufs.min <= p.loudness.target_lufs <= lufs.max for p in drawn)


def test_reverb_is_likelier_for_noisier_targets():
    assert reverb_probability(40.0) < reverb_probability(10.0) < reverb_probability(5.0) == 1.0
    noisy, clean = _profile(snr=(0, 5)), _profile(snr=(35, 40))
    share = [
        np.mean(
            [
                draw_params(p, utterance_rng(0, str(i), 0), 16000, 4).reverb is not None
                for i in range(300)
            ]
        )
        for p in (noisy, clean)
    ]
    assert share[0] > 0.9 and share[1] < 0.3


def _scores_spelled_out(magnitude, freqs, gains, step):
    """The filter choice's score of every candidate (a column of ``gains``), by its
    definition: weight the frames' spectra, then mean rolloff and mean centroid."""
    scores = []
    for gain in gains.T.astype(np.float64):
        weighted = magnitude * gain
        rolloff = float(mean_rolloff(weighted, freqs))
        centroid = float(np.mean((weighted @ freqs) / weighted.sum(axis=1)))
        scores.append(
            abs(rolloff / step.target_rolloff_hz - 1)
            + 0.5 * abs(centroid / step.target_centroid_hz - 1)
        )
    return np.array(scores)


@pytest.mark.parametrize(
    ("rate", "rolloff_hz", "centroid_hz"),
    [(8000, 3000.0, 1500.0), (8000, 1500.0, 700.0), (8000, 3400.0, 1900.0), (16000, 2000.0, 900.0)],
)
def test_filter_choice_minimises_the_documented_score(
    speech_samples, rate, rolloff_hz, centroid_hz
):
    x, source_rate = speech_samples
    x, _ = ops.resample(x, source_rate, rate)
    noise = ops.coloured_noise(len(x), rate, 1.0, seed=3)
    x, _ = ops.add_noise(x, rate, noise, 20.0)
    step = FilterStep(target_rolloff_hz=rolloff_hz, target_centroid_hz=centroid_hz)
    resolved = chain.resolve_filter(x, rate, step)

    # Coordinate descent as documented, with the scores computed the slow, plain way.
    magnitude, freqs = active_spectra(
        x, rate, max_frames=chain.RESOLVE_FRAMES, frame_seconds=chain.RESOLVE_FRAME_SECONDS
    )
    # The cutoff grids are the module's design; the gains are |H(f)| of a Butterworth
    # filter of that order, written out here: 1 / sqrt(1 + (f / fc)^2n) for a low-pass,
    # 1 / sqrt(1 + (fc / f)^2n) for a high-pass; index 0 of each grid is "no filter".
    lows, highs, *_ = chain._candidates(rate, len(freqs), step.order)
    with np.errstate(divide="ignore", invalid="ignore"):  # f = 0 under the "none" high-pass
        low_gain = 1 / np.sqrt(1 + (freqs[:, None] / lows[None, :]) ** (2 * step.order))
        high_gain = 1 / np.sqrt(1 + (highs[None, :] / freqs[:, None]) ** (2 * step.order))
    high_gain[:, 0] = 1.0
    low = int(np.argmin(_scores_spelled_out(magnitude, freqs, low_gain, step)))
    high_gains = high_gain * low_gain[:, low : low + 1]
    high = int(np.argmin(_scores_spelled_out(magnitude, freqs, high_gains, step)))
    low_gains = low_gain * high_gain[:, high : high + 1]
    low = int(np.argmin(_scores_spelled_out(magnitude, freqs, low_gains, step)))

    assert resolved.resolved
    assert resolved.highpass_hz == (float(highs[high]) if high else None)
    assert resolved.lowpass_hz == (float(lows[low]) if low else None)


def test_logged_parameters_replay_to_the_same_audio(speech_samples):
    x, rate = speech_samples
    assets = Assets(rirs=simulate_rirs(2, 16000, seed=1))
    profile = _profile(snr=(0, 5))
    drawn = draw_params(profile, utterance_rng(3, "x", 0), 16000, num_rirs=2)
    first, out_rate, applied = apply_chain(x, rate, drawn, assets)
    assert applied.filter.resolved and out_rate == 16000 and len(first) == len(x)
    replayed = ChainParams.model_validate_json(applied.model_dump_json())
    again, _, _ = apply_chain(x, rate, replayed, assets)
    assert np.array_equal(first, again)
    assert integrated_loudness(first, out_rate) == pytest.approx(
        drawn.loudness.target_lufs, abs=0.2
    )


def test_telephony_preset_is_narrowband_noisy_and_at_the_model_rate(speech_samples):
    x, rate = speech_samples
    params = draw_telephony(np.random.default_rng(0), 16000)
    y, out_rate = apply_telephony(x, rate, params)
    assert out_rate == 16000 and len(y) == len(x)
    assert _band_energy_share(y, out_rate, 4000) < 1e-3
    assert _band_energy_share(y, out_rate, 0) > 0  # not silent
    assert estimate_snr(y, out_rate) < estimate_snr(x, rate) - 10
    assert np.max(np.abs(y)) <= 1.0


# --- speed perturbation (augmentation.speedFactors)


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_change_speed_divides_the_duration_and_multiplies_the_pitch(factor):
    rate = 16000
    t = np.arange(rate) / rate
    tone = (0.5 * np.sin(2 * np.pi * 200.0 * t)).astype(np.float32)
    faster = ops.change_speed(tone, rate, factor)
    assert len(faster) == pytest.approx(rate / factor, abs=2)
    # The pitch, read off the spectrum's peak (0.25 Hz bins after zero-padding).
    spectrum = np.abs(np.fft.rfft(faster * np.hanning(len(faster)), n=4 * rate))
    peak_hz = np.argmax(spectrum) * rate / (4 * rate)
    assert peak_hz == pytest.approx(200.0 * factor, abs=0.5)


def test_speed_is_drawn_last_from_the_factors_and_logged_and_replayed(speech_samples):
    profile = _profile()
    factors = (0.9, 1.0, 1.1)
    plain = [draw_params(profile, utterance_rng(0, str(i), 0), 16000) for i in range(60)]
    sped = [
        draw_params(profile, utterance_rng(0, str(i), 0), 16000, speed_factors=factors)
        for i in range(60)
    ]
    # Every other draw is the same with the factors or without: the speed comes last.
    assert [s.model_copy(update={"speed": None}) for s in sped] == plain
    assert all(p.speed is None for p in plain)
    assert {s.speed for s in sped} == set(factors)
    # Applied first, so the output keeps the new duration at the model's rate.
    x, rate = speech_samples
    drawn = next(s for s in sped if s.speed == 1.1)
    out, out_rate, applied = apply_chain(x, rate, drawn, Assets())
    assert applied.speed == 1.1 and out_rate == 16000
    # Within 1e-4: the slower rate is rounded to a whole number of hertz.
    assert len(out) == pytest.approx(len(x) * 16000 / rate / 1.1, rel=1e-4)
    again, _, _ = apply_chain(x, rate, ChainParams.model_validate_json(applied.model_dump_json()),
                              Assets())  # fmt: skip
    assert np.array_equal(out, again)


def test_a_calibration_turns_the_drawn_snr_into_a_reading_and_mixes_at_its_inverse():
    from marco_trainer.audio.snr_calibration import SnrCalibration

    profile = _profile()
    line = SnrCalibration(slope=0.5, intercept=5.0, utterances=8)
    for i in range(20):
        plain = draw_params(profile, utterance_rng(0, str(i), 0), 16000)
        calibrated = draw_params(profile, utterance_rng(0, str(i), 0), 16000, snr_calibration=line)
        assert calibrated.noise.reading_db == plain.noise.snr_db
        # read = 0.5 · mixed + 5, inverted by hand.
        assert calibrated.noise.snr_db == pytest.approx((plain.noise.snr_db - 5.0) / 0.5)
        # No draw added or moved: everything else is the uncalibrated draw.
        noise = calibrated.noise.model_copy(
            update={"snr_db": plain.noise.snr_db, "reading_db": None}
        )
        assert calibrated.model_copy(update={"noise": noise}) == plain
