"""The babble bank: several source talkers at once, for the noise step.

Each test speaker is a pure tone of its own frequency, so which talkers a clip mixes and
at what power is read off its spectrum, independently of how the bank was built."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from marco_contract.formats import Utterance
from marco_trainer.audio.babble import PEAK, babble_bank, mix_talkers, pick_talkers
from marco_trainer.audio.inputs import Source
from tests.tools import ROOT

RATE = 16_000
TONES = {"a": 300.0, "b": 700.0, "c": 1100.0, "d": 1900.0}


def tone_sources(tmp_path: Path, speakers: bool = True) -> list[Source]:
    """Two utterances per speaker, of different lengths and amplitudes."""
    sources = []
    for speaker, hz in TONES.items():
        for k, seconds in enumerate((1.0, 2.0)):
            t = np.arange(int(seconds * RATE)) / RATE
            path = tmp_path / f"{speaker}{k}.wav"
            sf.write(path, (0.05 + 0.2 * k) * np.sin(2 * np.pi * hz * t), RATE)
            extra = {"speaker": speaker} if speakers else {}
            line = Utterance(audio_filepath=str(path), text="x", **extra)
            sources.append(Source(path.name, path, line))
    return sources


def tone_powers(audio: np.ndarray) -> dict[str, float]:
    spectrum = np.abs(np.fft.rfft(audio)) ** 2
    freqs = np.fft.rfftfreq(audio.size, 1 / RATE)
    return {s: float(spectrum[np.abs(freqs - hz) < 3].sum()) for s, hz in TONES.items()}


def present(powers: dict[str, float]) -> list[str]:
    return [s for s, power in powers.items() if power > 1e-3 * max(powers.values())]


def test_each_clip_mixes_distinct_talkers_at_equal_power(tmp_path: Path) -> None:
    sources = tone_sources(tmp_path)
    bank = babble_bank(sources, RATE, talkers=3, seed=1, clips=5, seconds=4.0)
    assert len(bank) == 5
    for clip in bank:
        assert clip.size == 4 * RATE
        assert np.max(np.abs(clip)) == pytest.approx(PEAK, rel=1e-5)
        powers = tone_powers(clip)
        talkers = present(powers)
        assert len(talkers) == 3  # three talkers, none twice
        levels = [powers[s] for s in talkers]
        # Their utterances are 0.05 and 0.25 in amplitude: the bank evens them out.
        assert max(levels) / min(levels) == pytest.approx(1.0, abs=0.05)
    again = babble_bank(sources, RATE, talkers=3, seed=1, clips=5, seconds=4.0)
    assert all(np.array_equal(x, y) for x, y in zip(bank, again, strict=True))
    other = babble_bank(sources, RATE, talkers=3, seed=2, clips=5, seconds=4.0)
    assert not all(np.array_equal(x, y) for x, y in zip(bank, other, strict=True))


def test_the_bank_is_made_at_the_chains_rate(tmp_path: Path) -> None:
    (clip,) = babble_bank(tone_sources(tmp_path), 8000, talkers=4, seed=0, clips=1, seconds=2.0)
    assert clip.size == 2 * 8000
    spectrum = np.abs(np.fft.rfft(clip)) ** 2
    freqs = np.fft.rfftfreq(clip.size, 1 / 8000)
    peaks = sorted(freqs[np.argsort(spectrum)[-4:]])
    assert peaks == pytest.approx(sorted(TONES.values()), abs=1.0)


def test_too_few_speakers_is_refused_by_the_field_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"4 source speakers, babbleTalkers needs 5"):
        babble_bank(tone_sources(tmp_path), RATE, talkers=5, seed=0)


def test_lines_without_a_speaker_are_each_a_talker_of_their_own(tmp_path: Path) -> None:
    # Eight files, no speaker key: five are drawn as five talkers; two files share each
    # tone, so five files carry at least three of the four tones.
    (clip,) = babble_bank(tone_sources(tmp_path, speakers=False), RATE, talkers=5, seed=0,
                          clips=1, seconds=2.0)  # fmt: skip
    assert 3 <= len(present(tone_powers(clip))) <= 4


def test_an_unreadable_file_is_left_out_and_named(tmp_path: Path, capsys) -> None:
    sources = tone_sources(tmp_path)
    for source in sources:
        if source.key.startswith("a"):
            source.path.write_bytes(b"not audio")
    bank = babble_bank(sources, RATE, talkers=4, seed=0, clips=2, seconds=2.0)
    assert all(present(tone_powers(clip)) == ["b", "c", "d"] for clip in bank)
    assert "babble: skipped a" in capsys.readouterr().err


def test_pick_and_mix_are_pure() -> None:
    picks = pick_talkers({"x": [1, 2], "y": [3], "z": [4]}, clips=3, talkers=2,
                         rng=random.Random(0))  # fmt: skip
    assert len(picks) == 3 and all(len(p) == 2 for p in picks)
    speaker = {1: "x", 2: "x", 3: "y", 4: "z"}
    assert all(len({speaker[u] for u in p}) == 2 for p in picks)
    # A silent voice adds nothing; a short voice is looped to the length.
    mixed = mix_talkers([np.zeros(10), np.array([1.0, -1.0])], 6)
    assert np.allclose(mixed, PEAK * np.array([1, -1, 1, -1, 1, -1]))


def test_the_benchmark_hands_the_ftda_systems_babble_and_records_it(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import adaptation

    from marco_operator.api import parse_spec

    args = adaptation.parse_args(["--work", str(tmp_path), "--source-babble"])
    ftda = adaptation.marco_manifest(args, "ftda-target", 0)
    assert ftda["spec"]["augmentation"]["babbleTalkers"] == adaptation.BABBLE_TALKERS
    assert parse_spec(ftda["spec"]).augmentation.babble_talkers == adaptation.BABBLE_TALKERS
    assert "babbleTalkers" not in adaptation.marco_manifest(args, "ft", 0)["spec"]["augmentation"]
    assert adaptation.marco_settings(args, "ftda-target")["source_babble"] is True
    assert adaptation.marco_settings(args, "ft")["source_babble"] is False
    # An FT + DA row measured without babble is not reused for a run with it.
    row = tmp_path / "runs/car/seed0/ftda-target/row.json"
    row.parent.mkdir(parents=True)
    row.write_text(json.dumps({"scenario": "car", "seed": 0, "system": "ftda-target",
                               "test_wer": 1.0, "best_step": 20}))  # fmt: skip
    with pytest.raises(
        SystemExit, match=r"'source_babble': False.*asks for.*'source_babble': True"
    ):
        adaptation.measure_one(args, "car", tmp_path, tmp_path, 0, "ftda-target")
