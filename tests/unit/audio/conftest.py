"""Audio made on the spot for the audio unit tests: sox signals and flite speech."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from marco_demo.synth import Voice, speak


def sox(*args: str) -> None:
    subprocess.run(["sox", *args], check=True, capture_output=True)


@pytest.fixture(scope="session")
def run_sox():
    """``sox`` with its arguments; fails the test with sox's message."""
    return sox


@pytest.fixture(scope="session")
def audio_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("audio-unit")


@pytest.fixture(scope="session")
def speech(audio_dir) -> Path:
    """A real utterance with pauses between words, 16 kHz mono 16-bit."""
    return speak(
        "thank you for calling. please hold, while i look up your account.",
        audio_dir / "speech.wav",
        Voice("flite", "kal16"),
    )


@pytest.fixture(scope="session")
def speech_samples(speech) -> tuple[np.ndarray, int]:
    import soundfile as sf

    data, rate = sf.read(str(speech), dtype="float32")
    return data, rate


@pytest.fixture(scope="module")
def phone_files(speech, audio_dir, run_sox):
    """The speech through sox's telephone line: 300-3400 Hz, 8 kHz, μ-law or A-law,
    decoded to 16-bit PCM at 8 kHz; and the same band stored at 16 kHz."""
    out = {}
    for name, encoding in (("mulaw", "u-law"), ("alaw", "a-law")):
        coded = audio_dir / f"line-{name}.wav"
        run_sox(
            str(speech), "-r", "8000", "-e", encoding, "-b", "8", str(coded), "sinc", "300-3400"
        )
        out[name] = audio_dir / f"line-{name}-pcm.wav"
        run_sox(str(coded), "-e", "signed-integer", "-b", "16", str(out[name]))
    out["wide16"] = audio_dir / "line-16k.wav"
    run_sox(
        str(out["mulaw"]), "-r", "16000", "-e", "signed-integer", "-b", "16", str(out["wide16"])
    )
    return out
