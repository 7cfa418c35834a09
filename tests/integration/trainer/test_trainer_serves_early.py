"""Rank 0 answers the operator before its model loads, and stops answering when it fails.

The operator reads rank 0's history as soon as the train pod runs; a port that refuses it
past the operator's start-up allowance counts as an error. So the endpoint comes up before
the model, the data and the resume, serving an empty history, and a trainer that fails
while building leaves no server behind.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

import marco_trainer.train.loop as loop
from marco_trainer.train.loop import Trainer
from marco_trainer.train.options import TrainOptions
from tests.trainer_runs import free_port

pytestmark = pytest.mark.slow


def _read(port: int) -> dict:
    url = f"http://127.0.0.1:{port}/v1/evaluations"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _options(tmp_path, model, manifest, port: int, **overrides) -> TrainOptions:
    values = dict(
        model=str(model),
        train_manifests=[str(manifest)],
        validation_manifest=str(manifest),
        output_dir=tmp_path / "run",
        learning_rate=1e-3,
        max_steps=2,
        eval_every=2,
        per_device_batch_size=2,
        gradient_accumulation=1,
        metrics_port=port,
        max_new_tokens=4,
        adaptation="early",
    )
    values.update(overrides)
    return TrainOptions(**values)


def test_history_is_served_while_the_model_loads(
    tmp_path, tiny_whisper, speech_manifest, monkeypatch
):
    port = free_port()
    seen_while_loading: list[dict] = []
    real_load = loop.load_asr_model

    def load_after_reading(*args, **kwargs):
        seen_while_loading.append(_read(port))  # a real HTTP read, at the moment of loading
        return real_load(*args, **kwargs)

    monkeypatch.setattr(loop, "load_asr_model", load_after_reading)
    trainer = Trainer(_options(tmp_path, tiny_whisper, speech_manifest, port))
    try:
        assert seen_while_loading == [
            {"adaptation": "early", "evaluations": [], "directive": None, "finished": False}
        ]
        assert trainer.run() == 0
        finished = _read(port)
    finally:
        trainer.close()
    assert finished["finished"] is True
    assert [e["step"] for e in finished["evaluations"]] == [2]
    with pytest.raises(urllib.error.URLError):
        _read(port)  # closed with the trainer


def test_a_trainer_that_fails_to_build_leaves_no_server(tmp_path, tiny_whisper, speech_manifest):
    port = free_port()
    missing = tmp_path / "missing.jsonl"
    with pytest.raises((FileNotFoundError, ValueError), match=r"missing\.jsonl"):
        Trainer(
            _options(tmp_path, tiny_whisper, speech_manifest, port, validation_manifest=missing)
        )
    with pytest.raises(urllib.error.URLError) as refused:
        _read(port)
    assert isinstance(refused.value.reason, ConnectionRefusedError)
