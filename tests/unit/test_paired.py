"""benchmarks/paired.py: the paired WER difference of two decodings and its standard error,
against the ratio estimator worked by hand."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.tools import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

from paired import main, paired_difference, utterance_errors


def report(folder: str, errors: list[int], words: list[int]) -> dict:
    return {
        "utterances": [
            {"audio_filepath": f"/{folder}/data/test-{i}.wav", "word_errors": e,
             "reference_words": w}
            for i, (e, w) in enumerate(zip(errors, words, strict=True))
        ]
    }  # fmt: skip


def test_difference_and_standard_error_by_hand() -> None:
    words = [5, 5, 10]
    first = utterance_errors(report("a", [1, 2, 0], words))
    second = utterance_errors(report("b", [0, 1, 1], words))  # other folder, same files
    difference, se = paired_difference(first, second)
    # (2 - 3) / 20 words. Per-utterance changes d = -1, -1, +1; R = -1/20; residuals
    # d - R w = -0.75, -0.75, 1.5; squares 3.375; x n/(n-1) = 5.0625; sqrt 2.25; / 20.
    assert difference == pytest.approx(-5.0)
    assert se == pytest.approx(11.25)


def test_reports_of_other_utterances_are_refused() -> None:
    first = utterance_errors(report("a", [1, 2], [5, 5]))
    second = utterance_errors(report("a", [1, 2, 0], [5, 5, 3]))
    with pytest.raises(ValueError, match="different utterances"):
        paired_difference(first, second)


def test_the_command_prints_each_pair(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    paths = []
    for label, errors in (("ft", [1, 2, 0]), ("ftda", [0, 1, 1])):
        path = tmp_path / f"{label}.json"
        path.write_text(json.dumps(report(label, errors, [5, 5, 10])))
        paths.append(f"{label}={path}")
    assert main(paths) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["ft: 15.00 % (3 utterances)", "ftda: 10.00 % (3 utterances)",
                   "ftda − ft: -5.00 ± 11.25"]  # fmt: skip


def test_a_row_with_utterance_errors_pairs_like_its_report(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    words = [5, 5, 10]
    ft = report("ft", [1, 2, 0], words)
    row = {"test_wer": 10.0, "utterance_errors": {"test-0.wav": [0, 5], "test-1.wav": [1, 5],
                                                  "test-2.wav": [1, 10]}}  # fmt: skip
    (tmp_path / "ft.json").write_text(json.dumps(ft))
    (tmp_path / "row.json").write_text(json.dumps(row))
    assert main([f"ft={tmp_path / 'ft.json'}", f"ftda={tmp_path / 'row.json'}"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "ftda − ft: -5.00 ± 11.25"


def test_a_row_without_utterance_errors_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "row.json").write_text(json.dumps({"test_wer": 10.0}))
    with pytest.raises(SystemExit):
        main([f"old={tmp_path / 'row.json'}", f"same={tmp_path / 'row.json'}"])
