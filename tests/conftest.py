from pathlib import Path

import pytest

from marco_demo.synth import Voice, speak

# Fixtures that run a program from outside the Python environment, and the
# marker (pyproject.toml) that a test using one of them gets: `make unit`
# leaves those tests out. Tests that call such a program themselves carry the
# marker in their module.
FIXTURE_MARKERS = {
    "helm": ("helm",),
    "prometheus": ("prometheus",),
    "run_sox": ("sox",),
    "hello_wav": ("tts",),
    "speech": ("tts",),
    "speech_manifest": ("tts",),
    "corpus": ("tts", "sox"),
    "small_run": ("tts", "sox"),
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for fixture, markers in FIXTURE_MARKERS.items():
            if fixture in used:
                for marker in markers:
                    item.add_marker(marker)


@pytest.fixture(scope="session")
def speech_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("speech")


@pytest.fixture(scope="session")
def hello_wav(speech_dir) -> Path:
    """A real synthesised utterance, 16 kHz mono 16-bit."""
    return speak("hello world, this is a test.", speech_dir / "hello.wav", Voice("flite", "kal16"))


@pytest.fixture(scope="session")
def whisper_tiny_dir(tmp_path_factory) -> Path:
    """The offline Whisper tiny.en, imported once per session by `marco_demo import-ct2`."""
    from tests.demo_runs import run_demo

    output = tmp_path_factory.mktemp("whisper") / "tiny.en"
    done = run_demo("import-ct2", "--output-dir", str(output))
    if done.returncode != 0:
        pytest.fail(f"import-ct2 failed ({done.returncode}): {done.stderr[-2000:]}")
    return output


@pytest.fixture(scope="session")
def whisper_tiny_10s_dir(tmp_path_factory) -> Path:
    """Whisper tiny.en with its encoder window cut to 10 s (`import-ct2 --window-seconds
    10`, as the demo imports it), imported once per session: the tests that use it only
    read it."""
    from tests.demo_runs import run_demo

    output = tmp_path_factory.mktemp("whisper") / "tiny.en-10s"
    done = run_demo("import-ct2", "--window-seconds", "10", "--output-dir", str(output))
    if done.returncode != 0:
        pytest.fail(f"import-ct2 failed ({done.returncode}): {done.stderr[-2000:]}")
    return output
