"""Session fixtures for the trainer's integration tests: speech, manifests, tiny models."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tiny_models import (
    TEST_SENTENCES,
    build_tiny_qwen2_audio,
    build_tiny_whisper,
    write_speech_manifest,
)


@pytest.fixture(scope="session")
def speech_manifest(tmp_path_factory) -> Path:
    """Four short flite utterances (about 1 s each) and their manifest."""
    return write_speech_manifest(tmp_path_factory.mktemp("trainer-speech"))


@pytest.fixture(scope="session")
def tiny_whisper(tmp_path_factory) -> Path:
    return build_tiny_whisper(tmp_path_factory.mktemp("tiny-whisper"), TEST_SENTENCES)


@pytest.fixture(scope="session")
def tiny_qwen2_audio(tmp_path_factory) -> Path:
    return build_tiny_qwen2_audio(tmp_path_factory.mktemp("tiny-qwen2-audio"), TEST_SENTENCES)
