"""Each scenario sounds as it claims: measured on a few generated files, not read off its plan.

The measurements here are written for the test (frame energies, FFT band
shares, runs of digital silence, flat tops), independent of the channel code.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from marco_demo.scenarios import ScenarioConfig, build

pytestmark = [pytest.mark.slow, pytest.mark.tts, pytest.mark.sox]

TINY = {
    "source_utterances": 6,
    "target_utterances": 3,
    "target_dev_utterances": 3,
    "target_test_utterances": 6,
    "babble_clips": 3,
}


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    roots = {}
    for name in ("meeting", "car", "voip", "radio", "clinic"):
        root = tmp_path_factory.mktemp(name)
        summary = build(ScenarioConfig(name=name, **TINY), root, workers=2)
        assert not any(s.failed for s in summary.splits.values()), summary
        roots[name] = root
    return roots


def _audio(root: Path, split: str) -> list[tuple[np.ndarray, int]]:
    manifest = root / f"{split}.jsonl"
    out = []
    for line in manifest.read_text().splitlines():
        audio, rate = sf.read(manifest.parent / json.loads(line)["audio_filepath"])
        out.append((np.asarray(audio, dtype=np.float64), int(rate)))
    return out


def _frame_db(audio: np.ndarray, rate: int, ms: float) -> np.ndarray:
    n = int(rate * ms / 1000)
    frames = audio[: audio.size // n * n].reshape(-1, n)
    return 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)


def _band_share(audio: np.ndarray, rate: int, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(audio)) ** 2
    frequencies = np.fft.rfftfreq(audio.size, 1 / rate)
    return float(spectrum[(frequencies >= low) & (frequencies < high)].sum() / spectrum.sum())


def test_manifests_and_summary(made: dict[str, Path]) -> None:
    for name, root in made.items():
        summary = json.loads((root / "summary.json").read_text())
        assert summary["scenario"] == name
        assert summary["held_out"] == (name == "clinic")
        lines = [json.loads(x) for x in (root / "target/unlabeled.jsonl").read_text().splitlines()]
        assert len(lines) == 3 and all(x.get("text") is None for x in lines)
        assert all("channel" not in x for x in lines)  # the profile must measure, not read
        test = [json.loads(x) for x in (root / "target/test.jsonl").read_text().splitlines()]
        assert len(test) == 6 and all(x["text"] for x in test)


def test_meeting_decays_slower_than_its_clean_source(made: dict[str, Path]) -> None:
    """Reverberation fills word endings: the steepest 10 ms energy falls get shallower."""

    def steepest_fall(audio: np.ndarray, rate: int) -> float:
        return float(np.percentile(np.diff(_frame_db(audio, rate, 10)), 2))

    source = [steepest_fall(a, r) for a, r in _audio(made["meeting"], "source/train")]
    target = [steepest_fall(a, r) for a, r in _audio(made["meeting"], "target/test")]
    # Clean TTS drops >8 dB in 10 ms at word ends; an RT60 ≥ 0.5 s room allows ~1.2 dB.
    assert np.median(target) > 0.5 * np.median(source), (source, target)
    assert max(target) > -6.0 > min(source)


def test_car_noise_floor_is_low_frequency_rumble(made: dict[str, Path]) -> None:
    """Between words the clean source is near silent, the car cabin is loud and bass-heavy."""
    for audio, rate in _audio(made["car"], "target/test"):
        frames = _frame_db(audio, rate, 25)
        quiet = np.percentile(frames, 10)
        assert quiet > np.percentile(frames, 90) - 30, "no persistent noise floor"
        n = int(rate * 0.025)
        chunks = audio[: audio.size // n * n].reshape(-1, n)
        floor = np.concatenate(chunks[frames <= quiet])
        assert _band_share(floor, rate, 0, 400) > 0.8
    for audio, rate in _audio(made["car"], "source/train"):
        frames = _frame_db(audio, rate, 25)
        assert np.percentile(frames, 10) < np.percentile(frames, 90) - 35


def test_voip_is_band_limited_by_its_codec_and_has_gaps(made: dict[str, Path]) -> None:
    source = [_band_share(a, r, 5500, 8000) for a, r in _audio(made["voip"], "source/train")]
    target_audio = _audio(made["voip"], "target/test")
    target = [_band_share(a, r, 5500, 8000) for a, r in target_audio]
    # LAME at 12-16 kbit/s low-passes near 5 kHz; the clean TTS keeps its air above it.
    assert max(target) < 2e-4 < np.median(source), (source, target)
    gaps = 0
    for audio, rate in target_audio:
        n = int(rate * 0.02)
        frames = audio[: audio.size // n * n].reshape(-1, n)
        gaps += int(np.sum(np.all(frames == 0, axis=1)))
    assert gaps >= 3  # lost packets concealed with silence


def test_radio_is_narrowband_and_clipped(made: dict[str, Path]) -> None:
    for audio, rate in _audio(made["radio"], "target/test"):
        assert rate == 8000
        assert _band_share(audio, rate, 3200, 4000) < 0.01
        flat = np.mean(np.abs(audio) >= 0.995 * np.max(np.abs(audio)))
        assert flat > 0.005, "no clipped flat tops"
    for audio, _ in _audio(made["radio"], "source/train"):
        assert np.mean(np.abs(audio) >= 0.995 * np.max(np.abs(audio))) < 0.001


def test_clinic_is_an_11khz_recorder_with_monitor_beeps_and_a_raised_floor(
    made: dict[str, Path],
) -> None:
    from scipy import signal

    def line_over_neighbours(frequencies: np.ndarray, psd: np.ndarray, at: float) -> float:
        """A steady tone is a narrow line: its bin over the median 40-200 Hz around it."""
        off = np.abs(frequencies - at)
        return float(psd[off < 10].max() / np.median(psd[(off > 40) & (off < 200)]))

    manifest = made["clinic"] / "target/test.jsonl"
    for line in manifest.read_text().splitlines():
        entry = json.loads(line)
        audio, rate = sf.read(manifest.parent / entry["audio_filepath"], dtype="float64")
        assert rate == 11025
        frequencies, psd = signal.welch(audio, rate, nperseg=2048)
        drawn = entry["channel"]["beep_hz"]
        lines = {f: line_over_neighbours(frequencies, psd, f) for f in (880.0, 960.0, 1000.0)}
        # The monitor's tone stands out at the frequency the plan drew, not at the others
        # it could have drawn (speech harmonics reach 8x here and there, never a fixed line).
        assert max(lines, key=lambda f: lines[f]) == drawn, (entry["audio_filepath"], lines)
        assert lines[drawn] > 4.0, lines
        # Automatic gain and 10-20 dB SNR: pauses are not near silent, as the source's are.
        frames = _frame_db(audio, rate, 25)
        assert np.percentile(frames, 10) > np.percentile(frames, 90) - 30
