"""Checkpoint averaging: the export is the mean of the best-scored evaluated weights.

On a small validation subset the single best evaluation is partly luck: a
1.5-point dev difference on 40 utterances picked checkpoints 3–5 test points
apart (docs/method.md, "Checkpoint averaging"). The mean of the ``k``
checkpoints with the lowest validation WER (ESPnet's ``average_checkpoints``
reading: the N best by the validation metric, averaged uniformly) smooths that
choice. It can also blur a sharp early optimum with later, worse weights (meeting,
docs/method.md: steps 20/80/100 averaged read 88.35 on dev against step 20's 83.96,
and 3.7 points worse on test), so the mean is exported only when it reads no worse
than the single best on the same utterances (``average_is_kept``). Pure functions
here; the loop saves, prunes and evaluates.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from pydantic import BaseModel, Field

from marco_contract.formats import Evaluation
from marco_contract.scoring import wer_change_standard_error

KEPT_DIR = "kept"
AVERAGED_CHECKPOINT = "averaged"
AVERAGED_FILE = "averaged.json"


def kept_steps(evaluations: Sequence[Evaluation], count: int) -> list[int]:
    """Steps of the ``count`` evaluations with the lowest WER, earliest first on a tie.

    A step evaluated twice (a resume repeats the evaluations after its checkpoint)
    counts once, with its newest WER."""
    newest = {e.step: e.wer for e in evaluations}
    ranked = sorted(newest.items(), key=lambda item: (item[1], item[0]))
    return sorted(step for step, _ in ranked[:count])


def kept_dir(checkpoints: Path, step: int) -> Path:
    return checkpoints / KEPT_DIR / f"step-{step:08d}"


def kept_on_disk(checkpoints: Path) -> dict[int, Path]:
    """The kept folders that exist, by step (a name that is not ``step-N`` is not ours)."""
    found: dict[int, Path] = {}
    for folder in (checkpoints / KEPT_DIR).glob("step-*"):
        suffix = folder.name.removeprefix("step-")
        if folder.is_dir() and suffix.isdigit():
            found[int(suffix)] = folder
    return found


def average_weights(states: Iterable[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Element-wise mean of state dicts with the same keys and shapes.

    Floating tensors are summed in float64 one state at a time, so host memory holds
    the sum and one state whatever the count, and cast back to their dtype; other
    tensors (integer buffers) are the first state's."""
    total: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    others: dict[str, torch.Tensor] = {}
    count = 0
    for state in states:
        if count == 0:
            total = {k: v.double() for k, v in state.items() if v.is_floating_point()}
            dtypes = {k: v.dtype for k, v in state.items()}
            others = {k: v for k, v in state.items() if not v.is_floating_point()}
        else:
            if state.keys() != dtypes.keys():
                differ = sorted(state.keys() ^ dtypes.keys())
                raise ValueError(f"checkpoints to average differ in weights: {differ[:5]}")
            for key, summed in total.items():
                if state[key].shape != summed.shape:
                    raise ValueError(
                        f"checkpoints to average differ in {key}'s shape: "
                        f"{tuple(state[key].shape)} against {tuple(summed.shape)}"
                    )
                summed += state[key].double()
        count += 1
    if count == 0:
        raise ValueError("no checkpoints to average")
    return {
        k: (total[k] / count).to(dtype) if k in total else others[k] for k, dtype in dtypes.items()
    }


def average_is_kept(
    best_errors: Sequence[int], averaged_errors: Sequence[int], words: Sequence[int]
) -> tuple[bool, float | None]:
    """Whether the mean is exported rather than the single best checkpoint, and the
    paired standard error of their WER difference (percent points, for the record).

    Both are word-error counts of the same validation utterances, in one order. The
    mean is kept when its WER is no higher than the best's. Not also when it is higher
    by less than that standard error (the rule until 2026-12-05): on the benchmark's
    tuning scenarios that margin exported means that were worse on test by up to 2
    points and gained at most 0.8 (docs/method.md, "the averaging rule")."""
    if not (len(best_errors) == len(averaged_errors) == len(words)):
        raise ValueError(
            f"{len(best_errors)} best, {len(averaged_errors)} averaged error counts "
            f"for {len(words)} utterances"
        )
    if sum(words) == 0:
        raise ValueError("no reference words to compare the checkpoints on")
    se = wer_change_standard_error(best_errors, averaged_errors, words)
    return sum(averaged_errors) <= sum(best_errors), se


class AveragedInfo(BaseModel):
    """``averaged.json`` beside the averaged weights: which steps, how they score, and
    whether they were exported."""

    steps: list[int]
    wer: float = Field(description="Validation WER (%) of the averaged weights.")
    wer_se: float | None = Field(default=None, description="Its standard error, WER points.")
    cer: float | None = None
    best_step: int | None = Field(default=None, description="The single best checkpoint's step.")
    best_wer: float | None = Field(
        default=None, description="Its validation WER (%), on the same utterances."
    )
    difference_se: float | None = Field(
        default=None,
        description="Paired standard error of the averaged minus the best WER, WER points.",
    )
    exported: bool = Field(
        default=True,
        description="The mean is the export; False when it read worse than the single best "
        "on the validation subset, and the best was exported instead.",
    )
