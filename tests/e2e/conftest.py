"""The end-to-end tests' data, made once for both modules: `python -m marco_demo data`
(TTS voices, a sox phone line) at a few utterances a split, and a tiny random Whisper
whose tokenizer knows their sentences."""

from __future__ import annotations

from pathlib import Path

import pytest

from marco_contract.manifests import read_manifest
from tests.demo_runs import run_demo
from tests.tiny_models import build_tiny_whisper


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("e2e-data")
    run_demo("data", "--output-dir", str(data),
             "--source-utterances", "8", "--source-validation-utterances", "2",
             "--target-utterances", "4", "--target-dev-utterances", "3",
             "--target-test-utterances", "3", check=True)  # fmt: skip
    texts = [u.text for split in ("source/train", "target/dev", "target/test")
             for u in read_manifest(data / f"{split}.jsonl")]  # fmt: skip
    build_tiny_whisper(data / "models" / "tiny", texts)
    return data
