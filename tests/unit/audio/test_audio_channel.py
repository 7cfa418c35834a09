"""The target's channel: codec and band detection, and the chain steps that apply them,
each checked against a measurement made here without the code under test (sox's own
codecs, scipy's Welch spectrum, plain numpy frame levels)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from scipy import signal

from marco_trainer.audio import chain, ops
from marco_trainer.audio.assets import Assets
from marco_trainer.audio.chain import apply_chain
from marco_trainer.audio.channel import CODECS, THIRD_OCTAVES_HZ, measure_channel
from marco_trainer.audio.eq_calibration import calibrate_eq
from marco_trainer.audio.features import FileMetrics, measure
from marco_trainer.audio.io import read_audio
from marco_trainer.audio.params import (
    ChainParams,
    ChannelStep,
    CompressionStep,
    draw_params,
    utterance_rng,
)
from marco_trainer.audio.profile import Profile, build_profile


def _noisy(x: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(len(x)).astype(np.float32)
    gain = np.sqrt(np.mean(x**2) / np.mean(noise**2) / 10 ** (snr_db / 10))
    return (x + gain * noise).astype(np.float32)


def _channel(path) -> object:
    data, info = read_audio(path)
    return measure(str(path), data, info).channel


@pytest.mark.parametrize("law", ["mulaw", "alaw"])
def test_g711_decoded_to_pcm_is_detected_from_its_samples(phone_files, law):
    found = _channel(phone_files[law])
    assert (found.codec, found.codec_evidence) == (law, "samples")
    assert found.narrowband
    assert 3200 <= found.band_high_hz <= 3600


def test_telephone_band_is_found_in_16k_storage_and_not_in_wideband_speech(speech, phone_files):
    line = _channel(phone_files["wide16"])
    # Resampled to 16 kHz: the μ-law levels are gone, the band is not. Its μ-law noise
    # fills 3.4-4 kHz, so the cliff is the 8 kHz channel's own Nyquist edge.
    assert (line.codec, line.narrowband) == ("pcm", True)
    assert 3200 <= line.band_high_hz <= 4000
    assert 150 <= line.band_low_hz <= 400
    clean = _channel(speech)
    assert (clean.codec, clean.narrowband) == ("pcm", False)


def test_codec_subtypes_are_read_from_the_container(speech_samples, audio_dir):
    x, rate = speech_samples
    x8, _ = ops.resample(x, rate, 8000)
    for subtype, codec in (("GSM610", "gsm"), ("ULAW", "mulaw"), ("IMA_ADPCM", "adpcm")):
        path = audio_dir / f"coded-{subtype}.wav"
        sf.write(str(path), x8, 8000, subtype=subtype)
        found = _channel(path)
        assert (found.codec, found.codec_evidence) == (codec, "subtype")


@pytest.fixture(scope="module")
def sox_mulaw_levels(audio_dir, run_sox) -> set[int]:
    """Every 16-bit value sox's μ-law decoder produces: a full-scale sweep through it."""
    ramp = audio_dir / "ramp.wav"
    sf.write(str(ramp), np.linspace(-1, 1, 200000, dtype=np.float32), 8000, subtype="FLOAT")
    coded, decoded = audio_dir / "ramp-u.wav", audio_dir / "ramp-u-pcm.wav"
    run_sox(str(ramp), "-e", "u-law", "-b", "8", str(coded))
    run_sox(str(coded), "-e", "signed-integer", "-b", "16", str(decoded))
    values, _ = sf.read(str(decoded), dtype="int16")
    return set(np.unique(values).tolist())


def test_applied_mulaw_sits_on_sox_mulaw_levels_and_is_detected(speech_samples, sox_mulaw_levels):
    assert len(sox_mulaw_levels) <= 256
    x, rate = speech_samples
    x8, _ = ops.resample(0.5 * x, rate, 8000)
    y, out_rate = ops.codec_round_trip(x8, 8000, "mulaw")
    assert out_rate == 8000 and len(y) == len(x8)
    ints = np.rint(y * 32768).astype(int)
    assert np.isin(ints, list(sox_mulaw_levels)).mean() > 0.999
    assert measure_channel(y, 8000, "PCM_16").codec == "mulaw"
    assert measure_channel(x8, 8000, "PCM_16").codec == "pcm"  # the input was not


def test_applied_gsm_is_sox_gsm(speech_samples, audio_dir, run_sox):
    x, rate = speech_samples
    x8, _ = ops.resample(0.5 * x, rate, 8000)
    y, _ = ops.codec_round_trip(x8, 8000, "gsm")
    source = audio_dir / "gsm-in.wav"
    sf.write(str(source), x8, 8000, subtype="PCM_16")
    coded, decoded = audio_dir / "gsm.gsm", audio_dir / "gsm-out.wav"
    run_sox(str(source), str(coded))
    run_sox(str(coded), "-e", "signed-integer", "-b", "16", str(decoded))
    reference, _ = sf.read(str(decoded), dtype="float32")
    n = min(len(y), len(reference), len(x8))
    # As lossy as sox's GSM (libgsm): the coding error has the same size, within a factor
    # of two, and it is an error a codec makes (20 dB or less SNR), not a rounding.
    ours = np.mean((y[:n] - x8[:n]) ** 2)
    theirs = np.mean((reference[:n] - x8[:n]) ** 2)
    assert 0.5 < ours / theirs < 2
    assert 10 * np.log10(np.mean(x8[:n] ** 2) / ours) < 20


def _level_above(x: np.ndarray, rate: int, hz: float) -> float:
    """Welch power above ``hz`` against 300-3000 Hz, in dB."""
    freqs, power = signal.welch(x, rate, nperseg=1024)
    band = power[(freqs >= 300) & (freqs <= 3000)].mean()
    return float(10 * np.log10(power[freqs > hz].mean() / band))


def test_a_phone_band_edge_is_cut_into_wideband_speech(speech, speech_samples, phone_files):
    x, rate = speech_samples
    line = _channel(phone_files["wide16"])
    step = ChannelStep(eq=True, eq_target_db=line.band_levels_db, band_high_hz=line.band_high_hz)
    resolved = chain.resolve_channel(x, rate, step)
    # The source is far louder above 3.4-4 kHz than the line: the edge is the channel's.
    assert resolved.band_high_hz == line.band_high_hz
    out, _ = chain.line_filter(x, rate, resolved)
    assert _level_above(out, rate, 4500) < _level_above(x, rate, 4500) - 20


def test_an_edge_the_voice_made_is_not_cut_into_a_source_that_is_quieter_above_it(
    speech_samples,
):
    x, rate = speech_samples
    # A target with more air than the source: +8 dB above 4 kHz (a brighter voice through
    # a wideband microphone), measured as the profile measures it, and an edge at 4 kHz
    # as the detector read on the car scenario's voices.
    sos = signal.butter(4, 4000, "highpass", fs=rate, output="sos")
    bright = (x + (10 ** (8 / 20) - 1) * signal.sosfilt(sos, x)).astype(np.float32)
    target = measure_channel(bright, rate, "PCM_16").band_levels_db
    step = ChannelStep(eq=True, eq_target_db=target, band_high_hz=4000.0)
    resolved = chain.resolve_channel(x, rate, step)
    assert resolved.band_high_hz is None

    def through(index: int, audio: np.ndarray, sr: int, gains: list[float]):
        line = chain.resolve_channel(audio, sr, step.model_copy(update={"eq_gains_db": gains}))
        return chain.line_filter(audio, sr, line)

    eq = calibrate_eq([(x, rate)], through, target)
    assert eq is not None
    out, _ = through(0, x, rate, eq.gains_db)
    # The air stays, and the set's equaliser moves it toward the target's; the edge would
    # have taken it away.
    want = _level_above(bright, rate, 4500)
    assert abs(_level_above(out, rate, 4500) - want) < abs(_level_above(x, rate, 4500) - want)
    cut, _ = chain.line_filter(x, rate, step.model_copy(update={"resolved": True}))
    assert _level_above(cut, rate, 4500) < _level_above(out, rate, 4500) - 20


def _spread(x: np.ndarray, rate: int) -> float:
    """p90 - p10 of 40 ms frame levels (dB) over frames within 50 dB of the loudest."""
    size = int(0.04 * rate)
    frames = x[: len(x) // size * size].reshape(-1, size).astype(np.float64)
    levels = 10 * np.log10(np.maximum((frames**2).mean(axis=1), 1e-20))
    levels = levels[levels > levels.max() - 50]
    return float(np.percentile(levels, 90) - np.percentile(levels, 10))


def test_compression_narrows_the_level_spread_toward_the_target(speech_samples):
    x, rate = speech_samples
    source = _noisy(x, 40.0)
    wide = _spread(source, rate)
    target = 0.6 * wide
    step = chain.resolve_compression(source, rate, CompressionStep(target_spread_db=target))
    assert step.ratio > 1
    out, _ = chain.compression(source, rate, step)
    assert abs(_spread(out, rate) - target) < 0.5 * abs(wide - target)
    # A target wider than the audio leaves it alone.
    loose = chain.resolve_compression(source, rate, CompressionStep(target_spread_db=wide + 10))
    assert loose.ratio == 1.0
    assert np.array_equal(chain.compression(source, rate, loose)[0], source)


def test_profile_summarises_the_channel_over_files(phone_files, speech):
    records: list[FileMetrics] = []
    for path in (phone_files["mulaw"], phone_files["alaw"], phone_files["wide16"], speech):
        data, info = read_audio(path)
        records.append(measure(str(path), data, info))
    channel = build_profile(records).channel
    assert channel is not None
    assert channel.codec == {"alaw": 1, "mulaw": 1, "pcm": 2}
    assert channel.codec_evidence == {"none": 2, "samples": 2}
    assert (channel.narrowband_files, channel.narrowband_share) == (3, 0.75)
    highs = sorted(r.channel.band_high_hz for r in records[:3] if r.channel)
    assert channel.band_high_hz == highs[1]  # the median of three


def _phone_profile(phone_files) -> Profile:
    """The profile of a μ-law line, an A-law line and a wideband file."""
    records = []
    for path in (phone_files["mulaw"], phone_files["alaw"], phone_files["wide16"]):
        data, info = read_audio(path)
        records.append(measure(str(path), data, info))
    return build_profile(records)


def test_channel_steps_are_drawn_applied_logged_and_replayed(phone_files, speech_samples):
    profile = _phone_profile(phone_files)
    x, rate = speech_samples
    # The set's equaliser, as the augment stage's calibration hands it to every draw.
    gains = [round(0.5 * k - 4.0, 2) for k in range(len(THIRD_OCTAVES_HZ))]
    drawn = [
        draw_params(profile, utterance_rng(1, str(i), 0), 16000, eq_gains_db=gains)
        for i in range(30)
    ]
    assert {p.channel.codec for p in drawn if p.channel} == {"mulaw", "alaw", None}
    params = next(p for p in drawn if p.channel and p.channel.codec == "alaw")
    # Uncompressed phone speech draws no compression; force one to see it logged too.
    assert params.compression is None
    params = params.model_copy(update={"compression": CompressionStep(target_spread_db=10.0)})
    out, out_rate, applied = apply_chain(x, rate, params, Assets())
    assert applied.channel is not None and applied.channel.resolved
    assert applied.channel.eq_gains_db == gains
    assert applied.compression is not None and applied.compression.resolved
    # The band is applied: nothing of note above the measured upper edge + 300 Hz.
    assert applied.channel.band_high_hz is not None
    spectrum = np.abs(np.fft.rfft(out)) ** 2
    freqs = np.fft.rfftfreq(len(out), 1 / out_rate)
    assert spectrum[freqs > applied.channel.band_high_hz + 300].sum() < 1e-3 * spectrum.sum()
    replayed = ChainParams.model_validate_json(applied.model_dump_json())
    again, _, _ = apply_chain(x, rate, replayed, Assets())
    assert np.array_equal(out, again)


def _records(spread: float | None = None) -> list[FileMetrics]:
    return [
        FileMetrics(
            path=f"{i}.wav",
            sample_rate=8000,
            bit_depth=8,
            subtype="ULAW",
            channels=1,
            duration_s=3.0,
            snr_db=15.0 + i,
            lufs=-25.0 + i,
            centroid_hz=1200.0 + 50 * i,
            rolloff_hz=2500.0 + 50 * i,
            level_spread_db=None if spread is None else spread + i,
        )
        for i in range(4)
    ]


def test_profiles_without_a_channel_draw_the_old_chain():
    params = draw_params(build_profile(_records()), utterance_rng(0, "a", 0), 16000)
    assert params.channel is None and params.compression is None
    assert params.resample.encoding == "mulaw"  # R stands in for the codec, as before


def test_compression_is_drawn_only_for_a_compressed_target():
    # Spreads 8..11 dB (median 9.5, under the 15 dB gate) vs 22..25 dB (ordinary speech).
    narrow = build_profile(_records(spread=8.0))
    wide = build_profile(_records(spread=22.0))
    drawn = [draw_params(narrow, utterance_rng(0, str(i), 0), 16000) for i in range(20)]
    assert all(p.compression is not None for p in drawn)
    # N(9.5, 1.118²) clipped to p5..p95 = [8.15, 10.85]
    assert all(8.15 <= p.compression.target_spread_db <= 10.85 for p in drawn if p.compression)
    assert draw_params(wide, utterance_rng(0, "a", 0), 16000).compression is None


@pytest.mark.parametrize("codec", CODECS)
def test_every_codec_the_chain_names_round_trips_here(speech_samples, codec):
    assert set(ops.CODEC_FORMATS) == set(CODECS)  # one list of codecs, two tables
    x, rate = speech_samples
    x8, _ = ops.resample(0.5 * x, rate, 8000)
    y, out_rate = ops.codec_round_trip(x8, 8000, codec)
    assert out_rate == 8000 and len(y) == len(x8)
    error = np.mean((y - x8) ** 2) / np.mean(x8**2)
    # Lossy but still the same speech: a coding error between -60 and -3 dB.
    assert 1e-6 < error < 0.5, error


def test_a_measured_channel_without_a_low_edge_keeps_the_low_end(phone_files, speech_samples):
    profile = _phone_profile(phone_files)
    x, rate = speech_samples
    drawn = [draw_params(profile, utterance_rng(2, str(i), 0), 16000) for i in range(20)]
    # These phone lines pass from ~300 Hz: a measured low edge, so F_filt may high-pass.
    with_edge = [p for p in drawn if p.channel and p.channel.band_low_hz is not None]
    assert with_edge and all(p.filter.highpass_allowed for p in with_edge)
    # The shape of this speech high-passed at 500 Hz: F_filt, when allowed, finds a
    # high-pass to match it; held to the low end, it may not.
    from marco_trainer.audio.features import spectral_shape
    from marco_trainer.audio.params import FilterStep

    centroid, rolloff = spectral_shape(ops.butterworth(x, rate, "highpass", 500.0, 4)[0], rate)
    shape = FilterStep(target_rolloff_hz=rolloff, target_centroid_hz=centroid)
    assert chain.resolve_filter(x, rate, shape).highpass_hz is not None
    held = shape.model_copy(update={"highpass_allowed": False})
    assert chain.resolve_filter(x, rate, held).highpass_hz is None
    without_low_edge = profile.model_copy(
        update={"channel": profile.channel.model_copy(update={"band_low_hz": 20.0})}
    )
    redrawn = [draw_params(without_low_edge, utterance_rng(2, str(i), 0), 16000) for i in range(20)]
    assert any(p.channel for p in redrawn)
    assert all(not p.filter.highpass_allowed for p in redrawn if p.channel)


def test_a_measured_equaliser_holds_the_shape_match_from_cutting_the_top(
    phone_files, speech_samples
):
    profile = _phone_profile(phone_files)
    x, rate = speech_samples
    drawn = [draw_params(profile, utterance_rng(3, str(i), 0), 16000) for i in range(20)]
    equalised = [p for p in drawn if p.channel and p.channel.eq]
    assert equalised and all(not p.filter.lowpass_allowed for p in equalised)
    assert all(p.filter.lowpass_allowed for p in drawn if not p.channel)
    # The shape of this speech low-passed at 2 kHz: F_filt, when allowed, finds a
    # low-pass to match it; held, it leaves the top to the equaliser.
    from marco_trainer.audio.features import spectral_shape
    from marco_trainer.audio.params import FilterStep

    centroid, rolloff = spectral_shape(ops.butterworth(x, rate, "lowpass", 2000.0, 4)[0], rate)
    shape = FilterStep(target_rolloff_hz=rolloff, target_centroid_hz=centroid)
    assert chain.resolve_filter(x, rate, shape).lowpass_hz is not None
    held = shape.model_copy(update={"lowpass_allowed": False})
    assert chain.resolve_filter(x, rate, held).lowpass_hz is None
