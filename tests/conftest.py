from pathlib import Path

import pytest

from marco_trainer.synth import Voice, speak


@pytest.fixture(scope="session")
def speech_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("speech")


@pytest.fixture(scope="session")
def hello_wav(speech_dir) -> Path:
    """A real synthesised utterance, 16 kHz mono 16-bit."""
    return speak("hello world, this is a test.", speech_dir / "hello.wav", Voice("flite", "kal16"))
