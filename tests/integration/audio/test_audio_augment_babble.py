"""`augment --babble-talkers`: the noise step mixes other source talkers into each copy.

The source speakers each say a pure tone of their own frequency; the target is the
corpus's telephone audio with white noise. Which talkers a copy holds is read off its
spectrum: another speaker's tone standing far above its neighbouring bins is that
speaker's voice in the copy, which neither the target's noise nor the chain's other
steps put there (the control run without the flag shows no such tone)."""

from __future__ import annotations

import json

import numpy as np
import soundfile as sf

from marco_contract.exit_codes import BAD_INPUT
from tests.integration.audio.conftest import write_manifest

RATE = 16_000
#: Inside the telephone band, and no tone a harmonic or a difference of the others.
TONES = {"a": 520.0, "b": 830.0, "c": 1270.0, "d": 1910.0}


def tone_corpus(root) -> object:
    lines = []
    for speaker, hz in TONES.items():
        for k in range(2):
            t = np.arange(2 * RATE) / RATE
            name = f"{speaker}{k}.wav"
            sf.write(root / name, (0.1 + 0.2 * k) * np.sin(2 * np.pi * hz * t), RATE)
            lines.append({"audio_filepath": name, "text": "a tone", "speaker": speaker})
    return write_manifest(root / "tones.jsonl", lines)


def peak_db(audio: np.ndarray, rate: int, hz: float) -> float:
    """Power within 4 Hz of ``hz`` per bin over the median bin 30-100 Hz away, in dB."""
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.size))) ** 2
    distance = np.abs(np.fft.rfftfreq(audio.size, 1 / rate) - hz)
    near = spectrum[distance <= 4].mean()
    return float(10 * np.log10(near / np.median(spectrum[(distance >= 30) & (distance <= 100)])))


def test_copies_hold_other_source_talkers_only_with_babble(corpus, tmp_path, marco_trainer):
    source = tmp_path / "source"
    source.mkdir()
    manifest = tone_corpus(source)
    marco_trainer("profile", "--input", corpus / "target", "--output-dir", tmp_path / "profile")

    def augment(name: str, *flags: str) -> list[tuple[dict, list[str]]]:
        """Each line and the other speakers whose tones its copy holds."""
        out = tmp_path / name
        marco_trainer("augment", "--manifest", manifest, "--output-dir", out,
                      "--profile", tmp_path / "profile", "--copies", "2", "--seed", "3",
                      *flags)  # fmt: skip
        found = []
        for line in map(json.loads, (out / "manifest-00000-of-00001.jsonl").open()):
            audio, rate = sf.read(str(out / line["audio_filepath"]), dtype="float64")
            own = line["speaker"]
            others = [s for s, hz in TONES.items() if s != own and peak_db(audio, rate, hz) > 20]
            found.append((line, others))
        return found

    babble = augment("babble", "--babble-talkers", "2")
    assert len(babble) == 16
    # Two talkers per clip, at most one of them the copy's own: at least one other voice.
    assert all(line["augmentation"]["noise"]["source"] == "babble" for line, _ in babble)
    assert all(others for _, others in babble), [(x["audio_filepath"], o) for x, o in babble]
    # Across the copies, every speaker is heard behind some other speaker.
    assert set().union(*(others for _, others in babble)) == set(TONES)

    control = augment("control")
    assert all(line["augmentation"]["noise"]["source"] != "babble" for line, _ in control)
    assert not any(others for _, others in control), [o for _, o in control]


def test_babble_is_refused_with_the_telephony_preset_or_a_noise_folder(
    corpus, tmp_path, marco_trainer
):
    source = tmp_path / "source"
    source.mkdir()
    done = marco_trainer("augment", "--manifest", tone_corpus(source), "--output-dir",
                         tmp_path / "out", "--preset", "telephony", "--babble-talkers", "2",
                         expect=BAD_INPUT)  # fmt: skip
    assert "--babble-talkers: the profile chain only" in done.stderr
    marco_trainer("profile", "--input", corpus / "target", "--output-dir", tmp_path / "profile")
    done = marco_trainer("augment", "--manifest", source / "tones.jsonl", "--output-dir",
                         tmp_path / "out", "--profile", tmp_path / "profile",
                         "--babble-talkers", "2", "--noise-dir", source,
                         expect=BAD_INPUT)  # fmt: skip
    assert "--babble-talkers and --noise-dir both name the noise" in done.stderr
