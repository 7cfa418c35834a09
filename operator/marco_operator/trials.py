"""Pre-finetuning LR trials (paper §2, docs/method.md): the candidates and the choice.

A few short training runs from the same initial weights, each at one fixed LR
inside [η_min, η_max], each scored on the validation subset; cycle 0 starts at
the LR whose run reached the lowest WER. Pure functions; the core starts the
runs and records them (`status.trials`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from marco_contract.formats import StageResult
from marco_contract.status import TrialRecord, WerPoint
from marco_operator.api import TrialsSpec

#: Candidates are rounded to this many significant digits, so that they read as
#: people write LRs (1e-05, not 9.999999999999999e-06) and repeat exactly.
SIGNIFICANT_DIGITS = 3


def log_spaced(lr_min: float, lr_max: float, count: int) -> list[float]:
    """`count` LRs from lr_min to lr_max (both included), evenly spaced in log(LR).

    LRs act multiplicatively, so even spacing in log covers the decades of the
    range alike: 3 in [1e-6, 1e-4] are 1e-6, 1e-5, 1e-4.
    """
    if count < 2:
        raise ValueError(f"count: at least 2 candidates, got {count}")
    if not 0 < lr_min < lr_max:
        raise ValueError(f"bounds: need 0 < min < max, got [{lr_min}, {lr_max}]")
    ratio = math.log(lr_max / lr_min)
    return [
        float(f"{lr_min * math.exp(ratio * i / (count - 1)):.{SIGNIFICANT_DIGITS}g}")
        for i in range(count)
    ]


def candidate_learning_rates(trials: TrialsSpec, lr_min: float, lr_max: float) -> list[float]:
    """The spec's explicit LRs (checked against the bounds), else `count` log-spaced ones."""
    if trials.learning_rates:
        outside = [lr for lr in trials.learning_rates if not lr_min <= lr <= lr_max]
        if outside:
            raise ValueError(
                f"spec.trials.learningRates: {', '.join(f'{lr:g}' for lr in outside)} outside "
                f"the LR bounds [{lr_min:g}, {lr_max:g}]"
            )
        return list(trials.learning_rates)
    return log_spaced(lr_min, lr_max, trials.count)


def choose(trials: Sequence[TrialRecord]) -> TrialRecord | None:
    """The succeeded trial with the lowest best WER; None when none succeeded.

    A tie goes to the smaller LR: the same WER reached more gently is the safer
    start (a too-high LR is what the paper warns against, not a too-low one).
    """
    scored = [t for t in trials if t.state == "Succeeded" and t.best_wer is not None]
    if not scored:
        return None
    return min(scored, key=lambda t: (t.best_wer, t.learning_rate))


def curve(result: StageResult) -> list[WerPoint]:
    return [WerPoint(step=step, wer=wer) for step, wer in result.curve]


def finished(trials: Sequence[TrialRecord]) -> bool:
    return bool(trials) and all(t.state in ("Succeeded", "Failed") for t in trials)


def decision_message(trials: Sequence[TrialRecord], chosen: TrialRecord) -> str:
    failed = sum(t.state == "Failed" for t in trials)
    tail = f", {failed} failed" if failed else ""
    return (
        f"LR {chosen.learning_rate:.3g} chosen: best WER {chosen.best_wer:.2f}% "
        f"(trial {chosen.index} of {len(trials)}{tail})"
    )


def failure_message(trials: Sequence[TrialRecord]) -> str:
    details = "; ".join(
        f"trial {t.index} (LR {t.learning_rate:.3g}): {t.message or 'no WER'}" for t in trials
    )
    return f"all {len(trials)} LR trials failed: {details}"
