"""Writing a stage's compact result where the operator (or local driver) reads it."""

from __future__ import annotations

import os
from pathlib import Path

from marco_trainer.contract import StageResult
from marco_trainer.manifest import atomic_write_text

#: Set by the Job builder to the container's terminationMessagePath.
TERMINATION_LOG_ENV = "MARCO_TERMINATION_LOG"


def write_stage_result(result: StageResult, output_dir: str | Path) -> Path:
    """Write ``result.json`` in the stage's output dir and, in a pod, the termination message."""
    path = Path(output_dir) / "result.json"
    atomic_write_text(path, result.model_dump_json(indent=2))
    log = os.environ.get(TERMINATION_LOG_ENV)
    if log:
        Path(log).write_text(result.to_termination_message())
    return path


def read_stage_result(output_dir: str | Path) -> StageResult | None:
    path = Path(output_dir) / "result.json"
    if not path.exists():
        return None
    return StageResult.model_validate_json(path.read_text())
