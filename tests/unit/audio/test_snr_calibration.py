"""The SNR calibration: mixing at the SNR the profile's estimator will read back.

The expectations come from the estimator itself, run on fresh mixes the
calibration never saw: what it must achieve is that the output *reads* as asked.
"""

from __future__ import annotations

import numpy as np
import pytest

from marco_demo import acoustics
from marco_trainer.audio import ops
from marco_trainer.audio.assets import simulate_rooms
from marco_trainer.audio.features import FileMetrics, estimate_snr, frame_levels_db, level_spread
from marco_trainer.audio.params import COMPRESSED_SPREAD_DB, target_is_compressed
from marco_trainer.audio.profile import build_profile
from marco_trainer.audio.snr_calibration import SnrCalibration, calibrate, fit_line


def _pink(length: int, seed: int) -> np.ndarray:
    return ops.coloured_noise(length, 16000, beta=1.0, seed=seed)


def _mix(x: np.ndarray, rate: int, snr: float, seed: int) -> np.ndarray:
    return ops.add_noise(x, rate, _pink(len(x), seed), snr)[0]


def test_fit_line_recovers_a_known_line():
    mixed = [0.0, 5.0, 10.0, 20.0]
    assert fit_line(mixed, [0.5 * m + 3.0 for m in mixed]) == pytest.approx((0.5, 3.0))


def test_mixing_at_the_calibrated_snr_reads_back_as_the_asked_reading(speech_samples):
    x, rate = speech_samples
    # Eight pieces of the sample, each its own utterance with its own noise and drawn SNR.
    pieces = np.array_split(x, 8)
    drawn = [2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0]

    def mix(index, audio, sample_rate, offset):
        snr = drawn[index] + offset
        return _mix(audio, sample_rate, snr, seed=index), sample_rate, snr

    line = calibrate([(p, rate) for p in pieces], mix)
    assert line is not None and line.utterances == 8
    # The estimator reads a mix cleaner than mixed at low SNRs: the line is not identity.
    assert line.intercept > 0.5
    # Fresh mixes (other noise) at what the line says read near the ask; mixing at the
    # asked value itself reads 1.3 to 3.6 dB cleaner (pink noise, this sample). The line is
    # a linear reading of a nonlinear estimator, so the ask is met within 2.5 dB, and over
    # the range the draws cover it does better than the naive mix by more than half.
    errors, naive_errors = [], []
    for asked in (0.0, 4.0, 8.0, 12.0):
        calibrated = [
            estimate_snr(_mix(p, rate, line.mixed_for(asked), seed=100 + k), rate)
            for k, p in enumerate(pieces)
        ]
        naive = [
            estimate_snr(_mix(p, rate, asked, seed=100 + k), rate) for k, p in enumerate(pieces)
        ]
        errors.append(abs(float(np.median(calibrated)) - asked))
        naive_errors.append(abs(float(np.median(naive)) - asked))
    assert max(errors) < 2.5, errors
    assert np.mean(errors) < 0.5 * np.mean(naive_errors), (errors, naive_errors)


def test_an_estimator_blind_to_the_mix_gives_a_line_that_is_not_applied(speech_samples):
    x, rate = speech_samples

    def ignores_the_snr(index, audio, sample_rate, offset):
        return _mix(audio, sample_rate, 10.0, seed=index), sample_rate, 10.0 + offset

    line = calibrate([(x[:16000], rate), (x[16000:32000], rate)], ignores_the_snr)
    # A line fitted but not applied: the noise is mixed at the drawn reading itself.
    assert line is not None and not line.applied
    assert line.mixed_for(7.5) == 7.5


def test_mixed_snr_stays_in_range():
    steep = SnrCalibration(slope=0.25, intercept=6.0, utterances=4)
    assert steep.mixed_for(8.0) == pytest.approx(8.0)  # (8 − 6) / 0.25
    assert steep.mixed_for(-20.0) == -10.0
    assert steep.mixed_for(80.0) == 60.0


def _target(pieces: list[np.ndarray], rate: int, compress: bool) -> list[np.ndarray]:
    """A car-like target: each utterance at 8 dB SNR, compressed first (ratio 8 above its
    p10 frame level, as a hard AGC would) or not. At 3 dB the noise alone narrows the
    spread to 7.8 dB and a compressor takes off only 2 more: this is where they part."""
    out = []
    for k, piece in enumerate(pieces):
        if compress:
            threshold = float(np.percentile(frame_levels_db(piece, rate), 10))
            piece = ops.compress(piece, rate, threshold, 8.0)[0]
        out.append(_mix(piece, rate, 8.0, seed=200 + k))
    return out


def _profile_of(files: list[np.ndarray], rate: int):
    return build_profile(
        [
            FileMetrics(
                path=f"{k}.wav",
                sample_rate=rate,
                bit_depth=16,
                subtype="PCM_16",
                channels=1,
                duration_s=len(f) / rate,
                snr_db=estimate_snr(f, rate),
                lufs=-25.0,
                centroid_hz=1000.0,
                rolloff_hz=2500.0,
                level_spread_db=level_spread(f, rate),
            )
            for k, f in enumerate(files)
        ]
    )


def test_noise_alone_explains_a_noisy_targets_narrow_spread_and_compression_does_not(
    speech_samples,
):
    x, rate = speech_samples
    pieces = [x] * 6  # six utterances: the same words, each under its own noise
    plain = _profile_of(_target(pieces, rate, compress=False), rate)
    squeezed = _profile_of(_target(pieces, rate, compress=True), rate)
    # Both read as compressed by the fixed gate: the noise fills the pauses.
    assert plain.metric("level_spread_db").percentile(50) < COMPRESSED_SPREAD_DB
    assert target_is_compressed(plain) and target_is_compressed(squeezed)

    # The chain's draws are readings from the target (as the profile hands them over),
    # and the source goes through noise only: what an uncompressed copy would be.
    readings = plain.metric("snr_db").values
    assert readings is not None

    def mix(index, audio, sample_rate, offset):
        snr = readings[index] + offset
        return _mix(audio, sample_rate, snr, seed=index), sample_rate, snr

    line = calibrate([(p, rate) for p in pieces], mix, uncompressed=mix)
    assert line is not None and line.uncompressed_spread_db is not None
    # The copies' spread, measured on other noise at the calibrated SNR, is the plain
    # target's (within the margin), so the plain target is not compressed; the squeezed
    # one, made by a real compressor, is still narrower than the noise explains.
    assert abs(line.uncompressed_spread_db - plain.metric("level_spread_db").percentile(50)) < 2
    assert not target_is_compressed(plain, line.uncompressed_spread_db)
    assert target_is_compressed(squeezed, line.uncompressed_spread_db)
    # The calibration only ever takes compression away: a wide uncompressed reading
    # leaves the fixed gate as it was.
    assert target_is_compressed(plain, 40.0)


def test_without_an_uncompressed_chain_the_line_carries_no_spread(speech_samples):
    x, rate = speech_samples

    def mix(index, audio, sample_rate, offset):
        snr = 5.0 * index + offset
        return _mix(audio, sample_rate, snr, seed=index), sample_rate, snr

    line = calibrate([(x, rate)] * 3, mix)
    assert line is not None and line.uncompressed_spread_db is None


@pytest.mark.parametrize("true_snr", [8.0, 16.0])
def test_a_kept_room_tail_lets_the_calibration_find_a_reverberant_targets_snr(
    speech_samples, true_snr
):
    """A target recorded in a room (the demo generator's room model: image sources and a
    Sabine tail, the file going on for the room's decay) with pink noise at ``true_snr``
    (its own definition: whole-signal power). The chain's rooms with the tail kept are
    mixed, by the calibrated line, at that SNR; cut at the last word, the reverberant
    pauses read as noise and the copies come out several dB cleaner than the target."""
    x, rate = speech_samples
    rt60 = 0.8
    readings = []
    for k in range(4):
        rir = acoustics.room_impulse_response(
            rate, rt60, (8.0, 6.0, 3.0), 2.5, np.random.default_rng(k)
        )
        wet = acoustics.reverberate(x, rir)
        target = acoustics.mix_at_snr(wet, _pink(len(wet), 50 + k), true_snr)
        readings.append(estimate_snr(target.astype(np.float32), rate))
    reading = float(np.median(readings))
    rooms = [rir for rir, _ in simulate_rooms(4, rate, 0, (rt60, rt60), full_tail=True)]

    def true_snr_of_copy(tail: int) -> float:
        def mix(index, audio, sample_rate, offset):
            wet = ops.reverberate(audio, sample_rate, rooms[index], tail=tail)[0]
            snr = reading + offset
            return ops.add_noise(wet, sample_rate, _pink(len(wet), 90 + index), snr)[0], rate, snr

        line = calibrate([(x, rate)] * len(rooms), mix)
        assert line is not None and line.applied
        wet = ops.reverberate(x, rate, rooms[0], tail=tail)[0]
        noisy = ops.add_noise(wet, rate, _pink(len(wet), 7), line.mixed_for(reading))[0]
        return 10 * float(np.log10(np.mean(wet**2) / np.mean((noisy - wet) ** 2)))

    assert abs(true_snr_of_copy(round(rt60 * rate)) - true_snr) < 1.5
    assert true_snr_of_copy(0) - true_snr > 2.5
