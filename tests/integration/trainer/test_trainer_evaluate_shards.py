"""A sharded evaluate (issue 15 point 4) measures exactly what one process measures: the
real evaluate stage on the tiny Whisper and flite speech, once whole and once as the
three pods of an Indexed Job (their shard from JOB_COMPLETION_INDEX and MARCO_NUM_SHARDS,
as Kubernetes and the Job builder set them), on five utterances (not a multiple of three).
The shards' termination messages, merged as the operator merges them, give the same S, D,
I and reference words, hence the same float WER, as the unsharded run."""

from __future__ import annotations

from pathlib import Path

import pytest

from marco_contract.evaluation import EvaluationReport, merge_evaluation_results
from marco_contract.formats import StageResult
from marco_contract.results import parse_stage_result, read_stage_result
from marco_trainer.cli import main
from tests.tiny_models import TEST_SENTENCES, build_tiny_whisper, write_speech_manifest

pytestmark = pytest.mark.slow

SHARDS = 3


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    """(model, reference model): two random tiny Whispers whose seeds make them say words
    (others say nothing, and all-deletions would hide a miscount): one hits, substitutes
    and deletes, the other substitutes and inserts."""
    root = tmp_path_factory.mktemp("shard-models")
    return (
        build_tiny_whisper(root / "model", TEST_SENTENCES, seed=5),
        build_tiny_whisper(root / "reference", TEST_SENTENCES, seed=4),
    )


def evaluate(models: tuple[Path, Path], manifest: Path, out: Path) -> int:
    model, reference = models
    # One utterance a batch: a batch's length bound is its longest clip's, and the split
    # changes which clips share a batch; what is compared here is the counting, not that.
    return main(["evaluate", "--model", str(model), "--manifest", str(manifest),
                 "--reference-model", str(reference), "--output-dir", str(out),
                 "--max-new-tokens", "8", "--batch-size", "1"])  # fmt: skip


def jiwer_counts(report: EvaluationReport) -> tuple[int, int, int, int]:
    """(H, S, D, I) of jiwer on the whole set's normalised pairs: the expectation."""
    import jiwer

    out = jiwer.process_words(
        [u.normalized_reference for u in report.utterances],
        [u.normalized_hypothesis for u in report.utterances],
    )
    return out.hits, out.substitutions, out.deletions, out.insertions


def test_three_shards_merge_to_exactly_the_unsharded_wer(tmp_path, models, monkeypatch):
    manifest = write_speech_manifest(tmp_path / "speech", (*TEST_SENTENCES, "see you soon"))
    assert len(manifest.read_text().splitlines()) % SHARDS != 0
    monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
    monkeypatch.setenv("MARCO_NUM_SHARDS", "1")
    assert evaluate(models, manifest, tmp_path / "whole") == 0
    whole = read_stage_result(tmp_path / "whole")
    assert whole is not None and whole.word_counts is not None
    single = EvaluationReport.model_validate_json((tmp_path / "whole/report.json").read_text())
    words = whole.word_counts
    assert (words.hits, words.substitutions, words.deletions, words.insertions) == jiwer_counts(
        single
    )
    assert words.hits and words.substitutions and words.deletions  # a test that can miscount
    assert whole.reference_word_counts is not None and whole.reference_word_counts.insertions

    shards: list[StageResult] = []
    out = tmp_path / "sharded"
    monkeypatch.setenv("MARCO_NUM_SHARDS", str(SHARDS))
    for index in range(SHARDS):
        monkeypatch.setenv("JOB_COMPLETION_INDEX", str(index))
        log = tmp_path / f"termination-{index}.log"
        monkeypatch.setenv("MARCO_TERMINATION_LOG", str(log))
        assert evaluate(models, manifest, out) == 0
        part = parse_stage_result(log.read_text())
        assert part is not None and (part.shard_index, part.num_shards) == (index, SHARDS)
        shards.append(part)
    assert [s.counts["evaluated"] for s in shards] == [2, 2, 1]

    merged = merge_evaluation_results(shards)
    assert merged.word_counts == whole.word_counts  # the same H, S, D, I, reference words
    assert merged.char_counts == whole.char_counts
    assert merged.reference_word_counts == whole.reference_word_counts
    assert merged.wer == whole.wer and merged.reference_wer == whole.reference_wer
    assert merged.counts == whole.counts
    # The hypotheses are the unsharded run's, each in exactly one shard's report.
    reports = [
        EvaluationReport.model_validate_json(
            (out / f"report-{i:05d}-of-{SHARDS:05d}.json").read_text()
        )
        for i in range(SHARDS)
    ]
    by_file = {u.audio_filepath: u.hypothesis for r in reports for u in r.utterances}
    assert by_file == {u.audio_filepath: u.hypothesis for u in single.utterances}
