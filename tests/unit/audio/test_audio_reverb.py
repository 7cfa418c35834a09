"""Blind RT60 of target audio, and rooms simulated to match it.

The expectations come from outside the code under test: speech convolved with the
textbook room (Gaussian noise decaying at 60 dB per RT60) of a chosen RT60, and
the decay of a simulated response read by Schroeder's backward integration.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from marco_trainer.audio.assets import Assets, simulate_rooms
from marco_trainer.audio.chain import apply_chain
from marco_trainer.audio.features import FileMetrics
from marco_trainer.audio.params import (
    draw_params,
    measured_reverb_probability,
    reverb_probability,
    room_rt60_range,
    utterance_rng,
)
from marco_trainer.audio.profile import build_profile, without_measured_channel
from marco_trainer.audio.reverb import REVERBERANT_RT60_S, estimate_rt60
from tests.audio_records import file_record


def textbook_room(rt60: float, rate: int, seed: int = 0) -> np.ndarray:
    """A diffuse room: white noise whose level falls 60 dB in ``rt60`` seconds."""
    t = np.arange(int(1.2 * rt60 * rate)) / rate
    h = np.random.default_rng(seed).standard_normal(len(t)) * 10 ** (-3 * t / rt60)
    h[0] = np.abs(h).max() * 2  # the direct sound
    return (h / np.abs(h).max()).astype(np.float32)


def in_room(x: np.ndarray, rir: np.ndarray, rate: int, snr_db: float = 30.0) -> np.ndarray:
    """Speech through the room, with a little white noise (a real microphone's floor)."""
    wet = signal.fftconvolve(x, rir)[: len(x) + len(rir) // 2]
    noise = np.random.default_rng(1).standard_normal(len(wet))
    return (wet + noise * np.sqrt(np.mean(wet**2)) * 10 ** (-snr_db / 20)).astype(np.float32)


def three_times(speech: np.ndarray, rate: int) -> np.ndarray:
    """The utterance three times with pauses: more offsets to read, as in a 10 s file."""
    pause = np.zeros(int(0.4 * rate), dtype=np.float32)
    return np.concatenate([speech, pause, speech, pause, speech])


@pytest.mark.parametrize("rt60", [0.4, 0.7, 1.0])
def test_the_rt60_of_speech_in_a_room_is_read_within_a_third(speech_samples, rt60):
    x, rate = speech_samples
    estimate = estimate_rt60(in_room(three_times(x, rate), textbook_room(rt60, rate), rate), rate)
    assert estimate is not None
    assert abs(estimate - rt60) <= rt60 / 3, estimate


def test_dry_speech_reads_dry_and_longer_rooms_read_longer(speech_samples):
    x, rate = speech_samples
    x = three_times(x, rate)
    dry = estimate_rt60(x, rate)
    assert dry is not None and dry < REVERBERANT_RT60_S
    readings = [
        estimate_rt60(in_room(x, textbook_room(r, rate), rate), rate) for r in (0.3, 0.6, 1.2)
    ]
    assert all(r is not None for r in readings)
    assert readings == sorted(readings), readings  # type: ignore[type-var]


def test_noise_without_offsets_has_no_rt60():
    noise = np.random.default_rng(0).standard_normal(16000 * 3).astype(np.float32)
    assert estimate_rt60(noise, 16000) is None


def schroeder_rt60(rir: np.ndarray, rate: int) -> float:
    """RT60 from the -5..-25 dB part of the backward-integrated energy (T20 × 3)."""
    energy = np.cumsum(np.square(rir[::-1], dtype=np.float64))[::-1]
    db = 10 * np.log10(energy / energy[0])
    t = np.arange(len(db)) / rate
    part = (db <= -5) & (db >= -25)
    slope = np.polyfit(t[part], db[part], 1)[0]
    return -60.0 / slope


@pytest.mark.parametrize("rt60", [0.6, 1.2])
def test_simulated_rooms_with_the_full_tail_decay_at_their_rt60(rt60):
    rate = 16000
    for rir, drawn in simulate_rooms(3, rate, seed=2, rt60_range=(rt60, rt60), full_tail=True):
        assert drawn == pytest.approx(rt60)
        assert schroeder_rt60(rir, rate) == pytest.approx(rt60, rel=0.25)


def test_without_the_full_tail_a_long_room_decays_too_fast():
    # What the tail is for: the image sources alone stop short of a 1.2 s room.
    rate = 16000
    rir, _ = simulate_rooms(1, rate, seed=2, rt60_range=(1.2, 1.2))[0]
    assert schroeder_rt60(rir, rate) < 0.8 * 1.2


def _records(rt60s: list[float | None]) -> list[FileMetrics]:
    return [file_record(i, rt60_s=rt60) for i, rt60 in enumerate(rt60s)]


def test_the_profile_counts_reverberant_files_among_those_it_could_read():
    rt60s = [0.1, 0.12, None, 0.5, 0.8, 1.1, None, 0.09]
    reverb = build_profile(_records(rt60s)).reverb
    assert reverb is not None
    read = [r for r in rt60s if r is not None]
    wet = [r for r in read if r >= 0.3]
    assert (reverb.measured_files, reverb.reverberant_files) == (len(read), len(wet))
    assert reverb.reverberant_share == pytest.approx(len(wet) / len(read))
    assert reverb.rt60_s.mean == pytest.approx(np.mean(read))
    assert reverb.reverberant_rt60_s is not None
    assert reverb.reverberant_rt60_s.percentile(50) == pytest.approx(np.median(wet))
    assert build_profile(_records([None, None])).reverb is None


def test_the_measured_share_sets_p_rev_and_the_paper_reading_stays_without_it():
    profile = build_profile(_records([0.6, 0.7, 0.9, 0.1]))
    assert measured_reverb_probability(profile) == pytest.approx(0.75)
    paper = without_measured_channel(profile)
    assert paper.reverb is None
    assert measured_reverb_probability(paper) == reverb_probability(30.0)
    drawn = [
        draw_params(profile, utterance_rng(0, f"u{i}", 0), 16000, num_rirs=4, rir_rt60s=[1.0] * 4)
        for i in range(400)
    ]
    share = np.mean([p.reverb is not None for p in drawn])
    assert abs(share - 0.75) < 4 * np.sqrt(0.75 * 0.25 / 400)
    assert all(p.reverb.rt60_s == 1.0 for p in drawn if p.reverb is not None)


def test_rooms_are_sized_from_the_reverberant_files_within_bounds():
    wet = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4]
    low, high = room_rt60_range(build_profile(_records([0.1, *wet])))  # type: ignore[misc]
    assert (low, high) == (
        pytest.approx(np.percentile(wet, 10)),
        pytest.approx(np.percentile(wet, 90)),
    )
    assert room_rt60_range(build_profile(_records([0.1, 0.12]))) is None
    assert room_rt60_range(build_profile(_records([5.0, 6.0]))) == (2.0, 2.0)


def test_a_measured_room_keeps_its_decay_after_the_utterance(speech_samples):
    x, rate = speech_samples
    profile = build_profile(_records([0.6, 0.7, 0.9, 0.8]))
    rooms = simulate_rooms(2, rate, 0, (0.7, 0.7), full_tail=True)
    assets = Assets(sample_rate=rate)
    assets.rirs = [rir for rir, _ in rooms]
    drawn = draw_params(profile, utterance_rng(0, "u", 0), rate, num_rirs=2, rir_rt60s=[0.7] * 2)
    assert drawn.reverb is not None and drawn.reverb.tail_s == 0.7
    quiet = drawn.model_copy(update={"noise": drawn.noise.model_copy(update={"snr_db": 90.0})})
    out, out_rate, _ = apply_chain(x, rate, quiet, assets)
    assert len(out) == len(x) + round(0.7 * out_rate)
    # The room's decay goes on after the last word: over the kept 0.7 s (the room's RT60,
    # 60 dB) its last 100 ms are more than 20 dB under its first.
    tail = out[len(x) :]
    assert np.mean(tail[:1600] ** 2) > 100 * np.mean(tail[-1600:] ** 2)
    # The paper's rooms (no measured reverberation) are cut at the utterance's end.
    paper = draw_params(
        without_measured_channel(profile),
        utterance_rng(0, "u", 0),
        rate,
        num_rirs=2,
        rir_rt60s=[0.7] * 2,
    )
    assert paper.reverb is None or paper.reverb.tail_s == 0.0
