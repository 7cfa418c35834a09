"""What the profile reads of a target's acoustics, and the augmenter making it.

Each target is the corpus's clean speech passed through one channel made here:
- a reverberant target: the profile reads its rooms, and the augmenter's rooms match
  them. The room is the textbook one (noise decaying 60 dB in 0.8 s); the check reads
  the augmented audio with the same blind estimator the profile uses, whose accuracy on
  such rooms tests/unit/audio/test_audio_reverb.py holds against the RT60 they were made
  with;
- an engine target: the profile reads its noise floor, and the augmenter's noise has it;
- a lossy link: the profile reads its lost packets, and the augmenter loses packets.
"""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest
import soundfile as sf
from scipy import signal

from marco_trainer.audio.noise_floor import noise_floor_bands
from marco_trainer.audio.profile import Profile, load_profile
from marco_trainer.audio.reverb import REVERBERANT_RT60_S, estimate_rt60

ROOM_RT60_S = 0.8


def profiled_target(corpus, tmp_path, marco_trainer, channel) -> Profile:
    """The corpus's source speech through ``channel(audio, rate, k) -> audio`` (file k),
    written as the target, and the profile the profile stage makes of it."""
    target = tmp_path / "target"
    target.mkdir()
    for k, path in enumerate(sorted((corpus / "source").glob("utt*.wav"))):
        speech, rate = sf.read(str(path), dtype="float32")
        sf.write(str(target / f"target{k}.wav"), channel(speech, rate, k).astype(np.float32), rate)
    marco_trainer("profile", "--input", target, "--output-dir", tmp_path / "profile")
    return load_profile(tmp_path / "profile")


def _room(rate: int, seed: int) -> np.ndarray:
    t = np.arange(int(1.2 * ROOM_RT60_S * rate)) / rate
    h = np.random.default_rng(seed).standard_normal(len(t)) * 10 ** (-3 * t / ROOM_RT60_S)
    return h / np.abs(h).max()


def test_rooms_follow_a_reverberant_target_only_with_channel_from_target(
    corpus, tmp_path, marco_trainer
):

    def in_room(dry: np.ndarray, rate: int, k: int) -> np.ndarray:
        wet = signal.fftconvolve(dry, _room(rate, k))
        wet += np.random.default_rng(k).standard_normal(len(wet)) * np.std(wet) * 0.01
        return 0.5 * wet / np.abs(wet).max()

    reverb = profiled_target(corpus, tmp_path, marco_trainer, in_room).reverb
    assert reverb is not None and reverb.reverberant_share == 1.0
    assert abs(reverb.rt60_s.percentile(50) - ROOM_RT60_S) <= ROOM_RT60_S / 3

    def augment(name: str, *flags: str) -> list[dict]:
        out = tmp_path / name
        marco_trainer(
            "augment", "--manifest", corpus / "source" / "source.jsonl", "--output-dir", out,
            "--profile", tmp_path / "profile", "--copies", "2", "--seed", "3", *flags,
        )  # fmt: skip
        lines = [json.loads(x) for x in (out / "manifest-00000-of-00001.jsonl").open()]
        for line in lines:
            audio, rate = sf.read(str(out / line["audio_filepath"]), dtype="float32")
            line["measured_rt60_s"] = estimate_rt60(audio, rate)
        return lines

    measured = augment("measured", "--channel-from-target")
    # Every copy reverberates (the target's share is 1), in a room sized from the target.
    assert all(line["augmentation"]["reverb"] is not None for line in measured)
    low, high = reverb.reverberant_rt60_s.percentile(10), reverb.reverberant_rt60_s.percentile(90)
    for line in measured:
        assert low - 1e-9 <= line["augmentation"]["reverb"]["rt60_s"] <= high + 1e-9
    read = [x["measured_rt60_s"] for x in measured if x["measured_rt60_s"] is not None]
    assert len(read) >= len(measured) // 2
    assert abs(statistics.median(read) - ROOM_RT60_S) <= ROOM_RT60_S / 3
    assert min(read) >= REVERBERANT_RT60_S

    # augmentation.rooms: the copies draw from that many rooms (the default 8 above).
    assert max(line["augmentation"]["reverb"]["rir_index"] for line in measured) < 8
    wider = [x["augmentation"]["reverb"] for x in augment("wider", "--channel-from-target",
                                                        "--rooms", "40")]  # fmt: skip
    indexes = [room["rir_index"] for room in wider]
    assert max(indexes) < 40 and max(indexes) >= 8
    assert all(low - 1e-9 <= room["rt60_s"] <= high + 1e-9 for room in wider)

    # The paper's chain reads p_rev from the SNR and keeps its own rooms (0.15-0.7 s).
    paper = augment("paper")
    rooms = [x["augmentation"]["reverb"] for x in paper if x["augmentation"]["reverb"]]
    assert len(rooms) < len(paper)
    assert all(0.15 <= room["rt60_s"] <= 0.7 for room in rooms)


def _hum(length: int, rate: int) -> np.ndarray:
    """An engine that never stops: 50 Hz harmonics and low rumble, nothing to harvest."""
    t = np.arange(length) / rate
    hum = sum(0.5**k * np.sin(2 * np.pi * 50 * (k + 1) * t) for k in range(4))
    rumble = signal.sosfilt(
        signal.butter(4, 300, fs=rate, output="sos"),
        np.random.default_rng(length).standard_normal(length),
    )
    return hum + 0.5 * rumble / np.std(rumble)


def _floor_distance(a: list[float | None], b: list[float | None]) -> float:
    """Mean |dB| difference over the bands where ``a`` is within 30 dB of its loudest."""
    top = max(v for v in a if v is not None)
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    return float(np.mean([abs(x - y) for x, y in pairs if x > top - 30]))


def test_an_engine_target_gets_noise_of_its_spectrum_not_pink_noise(
    corpus, tmp_path, marco_trainer
):

    def in_a_car(dry: np.ndarray, rate: int, k: int) -> np.ndarray:
        noise = _hum(len(dry), rate)
        noise *= np.sqrt(np.mean(dry**2) / np.mean(noise**2)) * 10 ** (-5 / 20)  # 5 dB SNR
        return 0.5 * (dry + noise) / np.abs(dry + noise).max()

    profile = profiled_target(corpus, tmp_path, marco_trainer, in_a_car)
    assert profile.noise_seconds < 5.0  # harvesting found (nearly) nothing
    assert profile.noise_spectrum is not None
    wanted = profile.noise_spectrum.levels_db

    def augment(name: str, *flags: str) -> list[float]:
        out = tmp_path / name
        marco_trainer(
            "augment", "--manifest", corpus / "source" / "source.jsonl", "--output-dir", out,
            "--profile", tmp_path / "profile", "--copies", "2", "--seed", "3", "--rooms", "0",
            *flags,
        )  # fmt: skip
        distances = []
        for line in (out / "manifest-00000-of-00001.jsonl").open():
            record = json.loads(line)
            audio, rate = sf.read(str(out / record["audio_filepath"]), dtype="float32")
            source = record["augmentation"]["noise"]["source"]
            distances.append((source, _floor_distance(wanted, noise_floor_bands(audio, rate))))
        return distances

    measured = augment("measured", "--channel-from-target")
    paper = augment("paper")
    assert {source for source, _ in measured} == {"spectrum"}
    assert {source for source, _ in paper} == {"coloured"}
    # The measured chain's noise floor lies closer to the target's, utterance for utterance
    # on average, than the paper's 1/f^β noise at the same drawn SNRs.
    mean_measured = np.mean([d for _, d in measured])
    mean_paper = np.mean([d for _, d in paper])
    assert mean_measured < 0.6 * mean_paper, (mean_measured, mean_paper)


def test_a_lossy_link_target_gets_packets_lost_as_often_and_as_long(
    corpus, tmp_path, marco_trainer
):
    packet = 320  # 20 ms at 16 kHz

    def over_a_lossy_link(speech: np.ndarray, rate: int, k: int) -> np.ndarray:
        speech = speech + 0.001 * np.random.default_rng(k).standard_normal(len(speech))
        # Every other file lost two single packets and one burst of two, mid-utterance.
        if k % 2 == 0:
            for start, count in ((20, 1), (45, 2), (70, 1)):
                speech[start * packet : (start + count) * packet] = 0.0
        return speech

    lossy = profiled_target(corpus, tmp_path, marco_trainer, over_a_lossy_link).dropouts
    assert lossy is not None
    assert lossy.share == pytest.approx(0.5) and lossy.packet_s == 0.02
    out = tmp_path / "aug"
    marco_trainer(
        "augment", "--manifest", corpus / "source" / "source.jsonl", "--output-dir", out,
        "--profile", tmp_path / "profile", "--copies", "4", "--seed", "3", "--rooms", "0",
        "--channel-from-target",
    )  # fmt: skip
    lines = [json.loads(x) for x in (out / "manifest-00000-of-00001.jsonl").open()]
    augmented = [x for x in lines if x["augmentation"]]
    dropped = [x for x in augmented if x["augmentation"]["dropouts"]]
    assert 0 < len(dropped) < len(augmented)  # about half of them
    for line in dropped:
        audio, _ = sf.read(str(out / line["audio_filepath"]), dtype="float32")
        packets = audio[: len(audio) // packet * packet].reshape(-1, packet)
        silent = int(np.all(packets == 0, axis=1).sum())
        assert silent == line["augmentation"]["dropouts"]["packets_lost"]
