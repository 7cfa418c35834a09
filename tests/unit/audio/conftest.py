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
