"""Per-file metrics measured on audio made here (sox, flite)."""

from __future__ import annotations

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf

from marco_trainer.audio.features import (
    estimate_snr,
    integrated_loudness,
    measure,
    spectral_shape,
)
from marco_trainer.audio.io import read_audio


def test_48k_24bit_file_is_profiled_as_48000_24(audio_dir, run_sox):
    path = audio_dir / "hifi.wav"
    run_sox(
        "-n",
        "-r",
        "48000",
        "-b",
        "24",
        "-c",
        "1",
        str(path),
        "synth",
        "1",
        "sine",
        "440",
        "vol",
        "0.5",
    )
    data, info = read_audio(path)
    metrics = measure("hifi.wav", data, info)
    assert (metrics.sample_rate, metrics.bit_depth, metrics.channels) == (48000, 24, 1)
    assert metrics.duration_s == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("args", "rate", "bits", "subtype"),
    [
        (("-e", "u-law"), 8000, 8, "ULAW"),
        (("-b", "8", "-e", "unsigned-integer"), 16000, 8, "PCM_U8"),
    ],
)
def test_bit_depth_comes_from_the_subtype(speech, audio_dir, run_sox, args, rate, bits, subtype):
    path = audio_dir / f"{subtype}.wav"
    run_sox(str(speech), *args, "-r", str(rate), str(path))
    _, info = read_audio(path)
    assert (info.sample_rate, info.bit_depth, info.subtype) == (rate, bits, subtype)


def test_gsm_is_8k_13_bit(speech, audio_dir, run_sox):
    path = audio_dir / "phone.gsm"
    run_sox(str(speech), "-r", "8000", "-c", "1", str(path))
    _, info = read_audio(path)
    assert (info.sample_rate, info.bit_depth, info.subtype) == (8000, 13, "GSM610")


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 20.0, 30.0])
def test_blind_snr_of_a_gated_tone_in_noise(snr_db):
    """A 440 Hz tone, on half the time (speech has pauses), white noise at a known SNR:
    tone power while on / noise power."""
    rate = 16000
    t = np.arange(4 * rate) / rate
    gate = (np.floor(t * 2) % 2 == 0).astype(np.float64)
    tone = 0.3 * np.sin(2 * np.pi * 440 * t) * gate
    tone_power = 0.3**2 / 2
    rng = np.random.default_rng(1)
    noise = rng.standard_normal(len(t)) * np.sqrt(tone_power / 10 ** (snr_db / 10))
    assert estimate_snr(tone + noise, rate) == pytest.approx(snr_db, abs=1.5)


def test_blind_snr_falls_as_noise_rises(speech_samples):
    x, rate = speech_samples
    rng = np.random.default_rng(2)
    noise = rng.standard_normal(len(x)).astype(np.float32)
    estimates = [estimate_snr(x + level * noise, rate) for level in (0.001, 0.01, 0.05)]
    assert estimates[0] > estimates[1] + 10 > estimates[2] + 20


@pytest.mark.parametrize("rate", [8000, 16000, 44100])
def test_loudness_matches_pyloudnorm(speech_samples, rate):
    x, source_rate = speech_samples
    from marco_trainer.audio.ops import resample

    y, _ = resample(x, source_rate, rate)
    y = y.astype(np.float64)
    stereo = np.stack([y, 0.5 * y], axis=1)
    # float32 too: the augmenter measures float32 audio (K-weighting and hop sums in float32).
    for signal in (y, stereo, y.astype(np.float32), stereo.astype(np.float32)):
        expected = pyloudnorm.Meter(rate).integrated_loudness(signal.astype(np.float64))
        assert integrated_loudness(signal, rate) == pytest.approx(expected, abs=0.01)


def test_centroid_and_rolloff_drop_for_low_passed_audio(speech, audio_dir, run_sox):
    muffled = audio_dir / "muffled.wav"
    run_sox(str(speech), str(muffled), "lowpass", "1000", "lowpass", "1000")
    centroid, rolloff = spectral_shape(*sf.read(str(speech), dtype="float32"))
    centroid_lp, rolloff_lp = spectral_shape(*sf.read(str(muffled), dtype="float32"))
    assert centroid_lp < 0.8 * centroid
    assert rolloff_lp < 0.8 * rolloff
    assert rolloff_lp < 1500


def test_loudness_of_a_6_channel_file_is_that_of_the_mono_the_outputs_are(tmp_path):
    """BS.1770 calibrates a 997 Hz sine of amplitude A in one channel to 20·log10(A) - 3.01
    LUFS; six copies of it downmix to the same mono, which is what augment writes."""
    rate, amplitude = 48000, 0.1
    sine = amplitude * np.sin(2 * np.pi * 997 * np.arange(5 * rate) / rate)
    sf.write(tmp_path / "surround.wav", np.stack([sine] * 6, axis=1), rate, subtype="FLOAT")
    data, info = read_audio(tmp_path / "surround.wav")
    metrics = measure("surround.wav", data, info)
    expected = 20 * np.log10(amplitude) - 3.01
    assert metrics.channels == 6
    assert metrics.lufs == pytest.approx(expected, abs=0.05)
    meter = pyloudnorm.Meter(rate)  # an independent meter on the mono signal agrees
    assert meter.integrated_loudness(sine) == pytest.approx(expected, abs=0.05)
