"""evaluate says one number of skipped utterances: in its counts, its report and on stdout."""

from __future__ import annotations

import json
import re

import numpy as np
import soundfile as sf

from marco_contract.results import read_stage_result
from marco_trainer.cli import main
from marco_trainer.evaluate import EvaluationReport


class EchoAsr:
    """Stands in for a model: transcribes every clip as "hello"."""

    family = "encoder-decoder"
    sampling_rate = 16000

    def to(self, device):
        return self

    def transcribe(self, audios, decoding=None):
        return ["hello"] * len(audios)


def test_counts_report_and_stdout_agree_on_what_was_skipped(tmp_path, monkeypatch, capsys):
    import marco_trainer.models
    import marco_trainer.runtime

    monkeypatch.setattr(marco_trainer.models, "load_asr_model", lambda *a, **k: EchoAsr())
    monkeypatch.setattr(marco_trainer.runtime, "pick_device", lambda: "cpu")
    monkeypatch.setattr(marco_trainer.runtime, "quiet_transformers", lambda: None)
    tone = 0.3 * np.sin(2 * np.pi * 300 * np.arange(16000) / 16000)
    sf.write(tmp_path / "a.wav", tone, 16000)
    sf.write(tmp_path / "b.wav", tone[::-1], 16000)
    for name in ("header.wav", "body.wav"):
        (tmp_path / name).write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt ")
    rows = [
        {"audio_filepath": "a.wav", "text": "hello"},
        {"audio_filepath": "b.wav", "text": "hello world"},
        {"audio_filepath": "header.wav", "text": "x"},  # refused when its header is read
        {"audio_filepath": "body.wav", "text": "x", "duration": 1.0},  # refused when decoded
        {"audio_filepath": "a.wav"},  # no transcript
        {"audio_filepath": "a.wav", "text": "hello"},  # the first line again
    ]
    manifest = tmp_path / "test.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{not json\n")
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", "echo", "--manifest", str(manifest),
                 "--output-dir", str(out)]) == 0  # fmt: skip

    report = EvaluationReport.model_validate_json((out / "report.json").read_text())
    result = read_stage_result(out)
    assert result is not None and result.counts == report.counts
    counts = report.counts
    printed = re.search(r"\((\d+) utterances, (\d+) skipped\)", capsys.readouterr().out)
    assert printed is not None
    by_reason = ("bad_lines", "duplicate_lines", "unlabeled", "corrupt_audio")
    # Five lines of seven were left out, each once, each for its reason: the same five
    # in the counts, in the report's list and on stdout.
    assert (
        sum(counts.get(k, 0) for k in by_reason)
        == len(report.skipped)
        == int(printed.group(2))
        == counts.get("skipped")
        == 5
    )
    assert counts["evaluated"] == int(printed.group(1)) == 2
    assert counts["corrupt_audio"] == 2
    joined = "\n".join(report.skipped)
    for named in ("header.wav", "body.wav", "test.jsonl:7", "test.jsonl:6"):
        assert named in joined
