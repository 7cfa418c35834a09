"""The benchmark scenarios' plans and signal operations (pure: no TTS, no sox)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from marco_demo import acoustics
from marco_demo.scenario_text import TEMPLATES, scenario_sentences
from marco_demo.scenarios import (
    BABBLE_SPLIT,
    HELD_OUT_SCENARIOS,
    ORACLE_SPLIT,
    SCENARIOS,
    SPLITS,
    ScenarioConfig,
    plan,
)
from marco_demo.sentences import DOMAIN_VOCABULARY, words
from marco_demo.synth import VOICES

SMALL = {
    "source_utterances": 40,
    "target_utterances": 20,
    "target_dev_utterances": 20,
    "target_test_utterances": 20,
    "babble_clips": 4,
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_splits_share_no_speaker_and_no_sentence(name: str) -> None:
    jobs = plan(ScenarioConfig(name=name, **SMALL))
    speakers = {s: {j.speaker for j in jobs if j.split == s} for s in (*SPLITS, BABBLE_SPLIT)}
    texts = {s: {j.text for j in jobs if j.split == s} for s in SPLITS}
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1 :]:
            assert not speakers[a] & speakers[b], (a, b)
            assert not texts[a] & texts[b], (a, b)
        assert not speakers[a] & speakers[BABBLE_SPLIT]
    # Sizes as asked, and every split hears more than one talker.
    assert len([j for j in jobs if j.split == "target/test"]) == 20
    assert all(len(speakers[s]) >= 2 for s in SPLITS)
    # A test WER is an average over talkers, not one voice's score: with two voices
    # one synthetic talker set a scenario's test WER (note 26), so dev hears four
    # and test six, each an equal share of the split.
    assert len(speakers["target/dev"]) >= 4
    assert len(speakers["target/test"]) >= 6
    for split in ("target/dev", "target/test"):
        counts = Counter(j.speaker for j in jobs if j.split == split)
        assert max(counts.values()) - min(counts.values()) <= 1, (split, counts)


def test_scenarios_share_no_speaker_with_each_other_or_the_demo() -> None:
    seen: dict[object, str] = {}
    for name, spec in SCENARIOS.items():
        for split, speakers in spec.speakers.items():
            for speaker in speakers:
                assert speaker not in seen, f"{speaker} in {name} {split} and {seen[speaker]}"
                seen[speaker] = f"{name} {split}"
                # The demo speaks with these voices unshifted; a scenario never does.
                assert (speaker.engine, speaker.name, speaker.pitch_cents) not in {
                    (engine, voice, 0) for engine, voice in VOICES
                }


def test_target_vocabularies_differ_from_the_demo_and_from_each_other() -> None:
    vocabularies = {
        n: {w for s in scenario_sentences(n, 150, 1) for w in words(s)} for n in TEMPLATES
    }
    for name, vocabulary in vocabularies.items():
        assert not vocabulary & {"refund", "invoice", "billing", "account"}, name
        assert len(vocabulary & DOMAIN_VOCABULARY) <= 2, (name, vocabulary & DOMAIN_VOCABULARY)
    names = list(vocabularies)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = vocabularies[a] & vocabularies[b]
            # Function words are shared; the content words are not.
            assert len(shared) < 0.35 * min(len(vocabularies[a]), len(vocabularies[b])), (a, b)


def test_plan_is_a_function_of_the_seed() -> None:
    first = plan(ScenarioConfig(name="car", seed=3, **SMALL))
    assert first == plan(ScenarioConfig(name="car", seed=3, **SMALL))
    assert first != plan(ScenarioConfig(name="car", seed=4, **SMALL))


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_the_oracle_is_the_source_through_the_target_channel_and_changes_nothing_else(
    name: str,
) -> None:
    plain = plan(ScenarioConfig(name=name, **SMALL))
    with_oracle = plan(ScenarioConfig(name=name, oracle=True, **SMALL))
    oracle = [j for j in with_oracle if j.split == ORACLE_SPLIT]
    # Every other split is the same job for job: the oracle only adds.
    assert [j for j in with_oracle if j.split != ORACLE_SPLIT] == plain
    source = [j for j in plain if j.split == "source/train"]
    target_types = {type(j.channel) for j in plain if j.split.startswith("target/")}
    assert [(j.text, j.speaker) for j in oracle] == [(j.text, j.speaker) for j in source]
    assert all(j.channel is not None and type(j.channel) in target_types for j in oracle)
    # Channels drawn, not one copied: as varied as the target's own.
    assert len({j.channel.model_dump_json() for j in oracle if j.channel}) > len(oracle) // 2
    assert len({j.path for j in oracle} | {j.path for j in plain}) == len(with_oracle)


def test_one_scenario_is_held_out() -> None:
    assert HELD_OUT_SCENARIOS == ("clinic",)
    assert sum(not s.held_out for s in SCENARIOS.values()) >= 3


def test_unknown_scenario_names_the_field() -> None:
    with pytest.raises(ValueError, match="--name: unknown scenario 'office'"):
        plan(ScenarioConfig(name="office"))


def test_meeting_channels_name_babble_clips_of_their_own_bank() -> None:
    jobs = plan(ScenarioConfig(name="meeting", **SMALL))
    bank = {j.path for j in jobs if j.split == BABBLE_SPLIT}
    assert len(bank) == 4
    for job in jobs:
        if job.channel is not None:
            assert set(job.channel.babble) <= bank  # type: ignore[union-attr]


# ------------------------------------------------------------------ signal operations


def _schroeder_rt60(rir: np.ndarray, rate: int) -> float:
    """RT60 from the -5..-25 dB slope of the backward-integrated energy (ISO 3382 T20)."""
    energy = np.cumsum(rir[::-1] ** 2)[::-1]
    decay = 10 * np.log10(energy / energy[0] + 1e-30)
    start, stop = np.argmax(decay <= -5), np.argmax(decay <= -25)
    return 3 * (stop - start) / rate


@pytest.mark.parametrize("rt60", [0.5, 1.0])
def test_room_impulse_response_decays_at_the_asked_rate(rt60: float) -> None:
    rir = acoustics.room_impulse_response(
        16000, rt60, (8.0, 6.0, 3.0), 2.5, np.random.default_rng(0)
    )
    measured = _schroeder_rt60(rir, 16000)
    # Early reflections and the noise of the tail blur the slope a little.
    assert 0.8 * rt60 < measured < 1.2 * rt60, measured


def test_mix_at_snr_sets_the_power_ratio() -> None:
    rng = np.random.default_rng(1)
    speech = np.sin(np.arange(16000) / 5.0)  # power 0.5
    noise = rng.standard_normal(16000) * 7.0
    mixed = acoustics.mix_at_snr(speech, noise, 10.0)
    residual = mixed - speech
    assert np.mean(residual**2) == pytest.approx(0.05, rel=1e-3)  # 0.5 / 10


def test_packet_loss_drops_the_asked_share_in_bursts() -> None:
    audio = np.ones(16000 * 200)  # 10 000 frames of 20 ms
    out, lost = acoustics.packet_loss(audio, 16000, 0.1, 0.5, np.random.default_rng(2))
    assert 800 < lost < 1200
    frames = out.reshape(-1, 320)
    silent = np.all(frames == 0, axis=1)
    repeated = np.all(frames == 0.5, axis=1)
    assert silent.sum() + repeated.sum() == lost
    # Bursts: with P(stay lost) = 0.5 about half the losses follow a loss.
    assert 0.35 < silent.sum() / lost < 0.65


def test_packet_loss_refuses_a_share_of_one() -> None:
    with pytest.raises(ValueError, match="loss and burst"):
        acoustics.packet_loss(np.ones(100), 16000, 1.0, 0.0, np.random.default_rng(0))


def test_engine_noise_sits_at_the_firing_frequency() -> None:
    drone = acoustics.engine_noise(16000 * 4, 16000, 50.0, np.random.default_rng(3))
    spectrum = np.abs(np.fft.rfft(drone)) ** 2
    frequencies = np.fft.rfftfreq(drone.size, 1 / 16000)
    assert spectrum[frequencies < 300].sum() / spectrum.sum() > 0.99
    assert abs(frequencies[np.argmax(spectrum)] - 50.0) < 3.0


def test_hard_clip_flattens_the_peaks() -> None:
    wave = np.sin(np.linspace(0, 40 * np.pi, 8000))
    clipped = acoustics.hard_clip(wave, 12.0)  # ×3.98: |sin| > 0.251 clips
    share = np.mean(np.abs(clipped) == 1.0)
    assert share == pytest.approx(1 - 2 / np.pi * np.arcsin(1 / 10 ** (12 / 20)), abs=0.01)


def test_monitor_beeps_are_tone_bursts_at_the_asked_rate() -> None:
    rate = 16000
    beeps = acoustics.monitor_beeps(rate * 10, rate, 960.0, 1.0, np.random.default_rng(4))
    assert np.mean(beeps**2) == pytest.approx(1.0, rel=1e-6)
    spectrum = np.abs(np.fft.rfft(beeps)) ** 2
    frequencies = np.fft.rfftfreq(beeps.size, 1 / rate)
    assert abs(frequencies[np.argmax(spectrum)] - 960.0) < 2.0
    # Sounding 120 ms of every second: count the 10 ms frames with energy.
    frames = (beeps[: beeps.size // 160 * 160].reshape(-1, 160) ** 2).mean(axis=1)
    sounding = np.mean(frames > 0.01 * frames.max())
    assert 0.10 < sounding < 0.14, sounding


def test_automatic_gain_raises_the_quiet_part_up_to_its_cap() -> None:
    rate = 16000
    t = np.arange(rate * 2) / rate
    tone = np.sin(2 * np.pi * 300 * t)
    audio = np.concatenate([tone, 0.01 * tone, tone])  # a 40 dB dip for 2 s
    out = acoustics.automatic_gain(audio, rate, max_gain_db=18.0, release_s=0.4)
    loud = np.sqrt(np.mean(out[rate // 2 : rate] ** 2) / np.mean(audio[rate // 2 : rate] ** 2))
    middle = slice(int(rate * 3.5), int(rate * 4))  # the dip's end: the follower has let go
    quiet = np.sqrt(np.mean(out[middle] ** 2) / np.mean(audio[middle] ** 2))
    assert loud == pytest.approx(1.0, abs=0.05)
    assert 20 * np.log10(quiet) == pytest.approx(18.0, abs=0.5)


def test_close_talk_lifts_the_low_end_only() -> None:
    rate = 16000
    t = np.arange(rate) / rate
    low, high = np.sin(2 * np.pi * 60 * t), np.sin(2 * np.pi * 3000 * t)
    gain_db = 10.0

    def gain(x: np.ndarray) -> float:
        y = acoustics.close_talk(x, rate, gain_db)[rate // 2 :]
        return float(10 * np.log10(np.mean(y**2) / np.mean(x[rate // 2 :] ** 2)))

    # Far under the 250 Hz corner the low-pass passes all: the full lift.
    assert gain(low) == pytest.approx(gain_db, abs=0.6)
    assert abs(gain(high)) < 0.3
