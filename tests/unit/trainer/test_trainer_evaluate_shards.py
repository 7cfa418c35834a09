"""evaluate in shards (--shard-index/--num-shards) says what one process says: the same
counts of skipped lines (shard 0 alone counts the manifest's), the same utterances, the
same edit counts and WER once merged; its files sit beside each other's."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from marco_contract.evaluation import EvaluationReport, merge_evaluation_results
from marco_contract.results import parse_stage_result, read_stage_result
from marco_trainer.cli import main

SHARDS = 3


class LengthAsr:
    """Stands in for a model: transcribes a clip as many "hello"s as it lasts tenths of a
    second, so that utterances get different hypotheses and different errors."""

    family = "encoder-decoder"
    sampling_rate = 16000

    def to(self, device):
        return self

    def transcribe(self, audios, decoding=None):
        return [" ".join(["hello"] * round(len(a) / 1600)) for a in audios]


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    import marco_trainer.models
    import marco_trainer.runtime

    monkeypatch.setattr(marco_trainer.models, "load_asr_model", lambda *a, **k: LengthAsr())
    monkeypatch.setattr(marco_trainer.runtime, "pick_device", lambda: "cpu")
    monkeypatch.setattr(marco_trainer.runtime, "quiet_transformers", lambda: None)
    rows = []
    for i, tenths in enumerate([3, 1, 4, 1, 5, 9, 2]):  # seven: not a multiple of three
        tone = 0.3 * np.sin(2 * np.pi * 300 * np.arange(1600 * tenths) / 16000)
        sf.write(tmp_path / f"u{i}.wav", tone, 16000)
        rows.append({"audio_filepath": f"u{i}.wav", "text": " ".join(["hello"] * (i % 4 + 1))})
    (tmp_path / "body.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt ")
    rows.append({"audio_filepath": "body.wav", "text": "x", "duration": 1.0})  # refused decoded
    rows.append({"audio_filepath": "u0.wav"})  # no transcript: a manifest-level skip
    manifest = tmp_path / "test.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{not json\n")
    return manifest


def evaluate(manifest, out, *extra):
    return main(["evaluate", "--model", "m", "--manifest", str(manifest),
                 "--output-dir", str(out), *extra])  # fmt: skip


def test_shards_merge_to_the_unsharded_result(corpus, tmp_path, monkeypatch):
    assert evaluate(corpus, tmp_path / "one") == 0
    single = read_stage_result(tmp_path / "one")
    single_report = EvaluationReport.model_validate_json((tmp_path / "one/report.json").read_text())
    assert single is not None and single.num_shards is None  # unsharded: as it always was

    out, messages = tmp_path / "three", []
    for index in range(SHARDS):
        log = tmp_path / f"termination-{index}"
        monkeypatch.setenv("MARCO_TERMINATION_LOG", str(log))
        assert evaluate(corpus, out, "--shard-index", str(index), "--num-shards", "3") == 0
        messages.append(parse_stage_result(log.read_text()))
    assert all(m is not None for m in messages)
    merged = merge_evaluation_results([m for m in messages if m is not None])

    assert merged.wer == single.wer  # the same float
    assert merged.word_counts == single.word_counts
    assert merged.char_counts == single.char_counts
    assert merged.counts == single.counts
    assert merged.family == single.family
    # The last shard to finish left the merged result for whoever reads the folder.
    assert read_stage_result(out) == merged

    reports = [
        EvaluationReport.model_validate_json((out / f"report-{i:05d}-of-00003.json").read_text())
        for i in range(SHARDS)
    ]
    assert [r.shard_index for r in reports] == [0, 1, 2]
    every = sorted((u for r in reports for u in r.utterances), key=lambda u: u.audio_filepath)
    assert every == sorted(single_report.utterances, key=lambda u: u.audio_filepath)
    skipped = [reason for r in reports for reason in r.skipped]
    assert sorted(skipped) == sorted(single_report.skipped)
    # Each shard decoded its own slice, in manifest order: utterance i in shard i mod 3.
    assert len(reports[0].utterances) == 3 and len(reports[2].utterances) == 2


def test_a_shard_past_the_end_of_a_small_set_decodes_nothing_and_succeeds(corpus, tmp_path):
    out = tmp_path / "many"
    code = evaluate(corpus, out, "--max-samples", "2", "--shard-index", "2", "--num-shards", "3")
    assert code == 0
    result = parse_stage_result((out / "result-00002-of-00003.json").read_text())
    assert result is not None and result.ok and result.counts["evaluated"] == 0
    assert result.word_counts is not None and result.word_counts.reference_words == 0


def test_a_shard_index_outside_the_shards_is_refused(corpus, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        evaluate(corpus, tmp_path / "x", "--shard-index", "3", "--num-shards", "3")
    assert exit_.value.code != 0
    assert "--shard-index must be in [0, 3)" in capsys.readouterr().err
