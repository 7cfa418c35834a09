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


@pytest.fixture(scope="session")
def whisper_tiny_dir(tmp_path_factory) -> Path:
    """The offline Whisper tiny.en imported once per session by `marco-trainer import-ct2`."""
    import subprocess
    import sys

    output = tmp_path_factory.mktemp("whisper") / "tiny.en"
    done = subprocess.run(
        [sys.executable, "-m", "marco_trainer", "import-ct2", "--output-dir", str(output)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.fail(f"import-ct2 failed ({done.returncode}): {done.stderr[-2000:]}")
    return output
