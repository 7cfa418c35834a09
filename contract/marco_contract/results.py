"""A stage's compact result: written by the stage, read by either driver.

Locally it is `result.json` in the stage's folder; in a pod it is also the
container's termination message, which the operator reads from the pod's status.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import ValidationError

from marco_contract.files import atomic_write_text
from marco_contract.formats import StageResult
from marco_contract.layout import RESULT_FILE

#: Set by the Job builder to the container's terminationMessagePath.
TERMINATION_LOG_ENV = "MARCO_TERMINATION_LOG"


def write_stage_result(
    result: StageResult, output_dir: str | Path, name: str = RESULT_FILE
) -> Path:
    """Write the result file in the stage's output dir and, in a pod, the termination message.

    `name`: a shard's own file, beside its siblings' (marco_contract.evaluation.shard_file)."""
    path = Path(output_dir) / name
    atomic_write_text(path, result.model_dump_json(indent=2))
    log = os.environ.get(TERMINATION_LOG_ENV)
    if log:
        Path(log).write_text(result.to_termination_message())
    return path


def parse_stage_result(text: str) -> StageResult | None:
    """The stage result in a result file or a termination message; None for anything else
    (under FallbackToLogsOnError a crashed container's message is the tail of its log)."""
    try:
        return StageResult.model_validate_json(text)
    except ValidationError:
        return None


def read_stage_result(output_dir: str | Path) -> StageResult | None:
    path = Path(output_dir) / RESULT_FILE
    if not path.exists():
        return None
    return parse_stage_result(path.read_text())
