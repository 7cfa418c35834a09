"""Evaluate after a stop the operator enforced (issue 14): the train Job was deleted before
its export, so `train/export` holds no model; evaluate exports the best checkpoint there
itself (`--export-checkpoint`, as plan.py passes it) and measures that model."""

from __future__ import annotations

from pathlib import Path

import pytest

from marco_contract.formats import StageResult
from marco_trainer.cli import main
from tests.trainer_runs import train_args, train_in_process

pytestmark = pytest.mark.slow


def evaluate(model: Path, manifest: Path, out: Path, *extra: str) -> StageResult:
    args = ["evaluate", "--model", str(model), "--manifest", str(manifest)]
    assert main([*args, "--output-dir", str(out), "--max-new-tokens", "4", *extra]) == 0
    return StageResult.model_validate_json((out / "result.json").read_text())


def test_evaluate_exports_and_measures_the_best_checkpoint_train_did_not_export(
    tmp_path, tiny_whisper, speech_manifest
):
    train = tmp_path / "train"
    # --no-export: the trainer ends as one killed before its export would (best kept, no
    # export folder), without racing a kill against the export.
    flags = dict(max_steps=2, eval_every=1, max_new_tokens=4, no_export=True)
    assert train_in_process(*train_args(tiny_whisper, speech_manifest, train, **flags)) == 0
    best, export = train / "checkpoints" / "best", train / "export"
    assert (best / "config.json").exists() and not export.exists()

    result = evaluate(
        export, speech_manifest, tmp_path / "evaluate", "--export-checkpoint", str(best)
    )
    assert (export / "config.json").exists() and (export / "README.md").exists()
    assert not (export / "optimizer.pt").exists()
    assert result.message is not None and "exported" in result.message
    # The exported model is the best checkpoint: the same WER as the checkpoint itself.
    direct = evaluate(best, speech_manifest, tmp_path / "direct")
    assert result.wer == direct.wer and direct.message is None
