"""`benchmarks/babble.py`: a bank of several source talkers at once, for noisePath.

Each test speaker is a pure tone of its own frequency, so which talkers a clip mixes and
at what power is read off its spectrum, independently of how the bank was built."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.tools import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

import adaptation
import babble

RATE = 16_000
TONES = {"a": 300.0, "b": 700.0, "c": 1100.0, "d": 1900.0}


def _source(tmp_path: Path) -> Path:
    (tmp_path / "source/train").mkdir(parents=True)
    lines = []
    for speaker, hz in TONES.items():
        for k, seconds in enumerate((1.0, 2.0)):
            t = np.arange(int(seconds * RATE)) / RATE
            # Different amplitudes per utterance: the bank evens them out.
            tone = (0.05 + 0.2 * k) * np.sin(2 * np.pi * hz * t)
            name = f"train/{speaker}{k}.wav"
            sf.write(tmp_path / "source" / name, tone, RATE)
            lines.append({"audio_filepath": name, "text": "x", "speaker": speaker})
    (tmp_path / "source/train.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return tmp_path


def _tone_powers(audio: np.ndarray) -> dict[str, float]:
    spectrum = np.abs(np.fft.rfft(audio)) ** 2
    freqs = np.fft.rfftfreq(audio.size, 1 / RATE)
    return {s: float(spectrum[np.abs(freqs - hz) < 3].sum()) for s, hz in TONES.items()}


def test_each_clip_mixes_distinct_source_talkers_at_equal_power(tmp_path: Path) -> None:
    out = babble.build(_source(tmp_path), clips=5, talkers=3, seconds=4.0, seed=1)
    files = sorted(out.glob("*.wav"))
    assert len(files) == 5 and out == tmp_path / babble.SOURCE_BABBLE_DIR
    for path in files:
        audio, rate = sf.read(path)
        assert rate == RATE and audio.size == 4 * RATE
        powers = _tone_powers(audio)
        present = [s for s, power in powers.items() if power > 1e-3 * max(powers.values())]
        assert len(present) == 3  # three talkers, none twice
        levels = [powers[s] for s in present]
        assert max(levels) / min(levels) == pytest.approx(1.0, abs=0.05)
    # The same arguments give the same bank.
    first = [sf.read(p)[0] for p in files]
    babble.build(tmp_path, clips=5, talkers=3, seconds=4.0, seed=1)
    assert all(np.array_equal(a, sf.read(p)[0]) for a, p in zip(first, files, strict=True))


def test_too_few_source_speakers_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"source/train.jsonl: 4 speakers, need 5"):
        babble.build(_source(tmp_path), talkers=5)


def test_the_ftda_systems_take_the_bank_and_their_rows_record_it(tmp_path: Path) -> None:
    args = adaptation.parse_args(["--work", str(tmp_path), "--source-babble"])
    ftda = adaptation.marco_manifest(args, "ftda-target", 0)
    assert ftda["spec"]["augmentation"]["noisePath"] == babble.SOURCE_BABBLE_DIR
    from marco_operator.api import parse_spec

    assert str(parse_spec(ftda["spec"]).augmentation.noise_path) == babble.SOURCE_BABBLE_DIR
    assert "noisePath" not in adaptation.marco_manifest(args, "ft", 0)["spec"]["augmentation"]
    assert adaptation.marco_settings(args, "ftda-target")["source_babble"] is True
    assert adaptation.marco_settings(args, "ft")["source_babble"] is False
    # An FT + DA row measured without the bank is not reused for a run with it.
    row = tmp_path / "runs/car/seed0/ftda-target/row.json"
    row.parent.mkdir(parents=True)
    row.write_text(json.dumps({"scenario": "car", "seed": 0, "system": "ftda-target",
                               "test_wer": 1.0, "best_step": 20}))  # fmt: skip
    with pytest.raises(
        SystemExit, match=r"'source_babble': False.*asks for.*'source_babble': True"
    ):
        adaptation.measure_one(args, "car", tmp_path, tmp_path, 0, "ftda-target")
