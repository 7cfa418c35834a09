"""The learning-rate policy: pure functions of the evaluation history.

Paper §2 (see docs/method.md):

- Eq. 1, encoder-decoder models: training runs in cycles of constant LR; the
  next cycle's LR falls linearly from η_max to η_min as the standard deviation
  of the WERs measured in the last cycle grows from 0 to σ_ref.
- Eq. 2, LLM-based models: the LR grows linearly from η'_min to η'_max with the
  WER (clipped to [0, 100]); first from the baseline WER0, then re-applied at
  each cycle boundary with the mean WER of the cycle just finished.
- Early stopping: stop when the best WER has not improved by `min_improvement`
  WER points for `patience` evaluations; the best step is kept.

WER is in percent everywhere. No I/O here.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from marco_contract.formats import Directive, Evaluation
from marco_contract.status import Family
from marco_operator.api import DEFAULT_LR_BOUNDS, TrainingSpec

#: Decoders at least this deep start cycle 0 at η_min: the paper ties LR
#: sensitivity to decoder depth (Whisper-Large-V3's 32 layers wanted 1e-7).
DEEP_DECODER_LAYERS = 24

#: Decoder depth of the Whisper checkpoints on the hub, by name fragment (most specific first).
WHISPER_DECODER_LAYERS: tuple[tuple[str, int], ...] = (
    ("large-v3-turbo", 4),
    ("turbo", 4),
    ("large", 32),
    ("medium", 24),
    ("small", 12),
    ("base", 6),
    ("tiny", 4),
)

LLM_NAME_HINTS = ("qwen2-audio", "qwen-audio", "kimi-audio", "voxtral", "granite-speech", "qwen")
ENCODER_DECODER_NAME_HINTS = ("whisper", "moonshine", "speech2text", "seamless")


def clip(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


def eq1_learning_rate(sigma_wer: float, lr_min: float, lr_max: float, sigma_ref: float) -> float:
    """Eq. 1: η_{j+1} = η_max − (η_max − η_min) · clip(σ_WER(j) / σ_ref, 0, 1)."""
    return lr_max - (lr_max - lr_min) * clip(sigma_wer / sigma_ref, 0.0, 1.0)


def eq2_learning_rate(wer: float, lr_min: float, lr_max: float) -> float:
    """Eq. 2: η = η'_min + (η'_max − η'_min) · clip(WER, 0, 100) / 100."""
    return lr_min + (lr_max - lr_min) * clip(wer, 0.0, 100.0) / 100.0


def sigma(wers: Sequence[float]) -> float:
    """Population standard deviation of a cycle's WERs (0 for fewer than two)."""
    return statistics.pstdev(wers) if len(wers) > 1 else 0.0


def family_from_name(model_source: str) -> Family | None:
    """A guess from the model's name alone, for the LR range before any stage has run
    (the operator reads no model files); None when the name is not telling. The
    trainer's :func:`marco_trainer.models.loading.family_from_config` answers from
    the model's config and reports it in its stage result, which the operator
    uses then (``status.family``)."""
    name = model_source.lower()
    if any(hint in name for hint in ENCODER_DECODER_NAME_HINTS):
        return "encoder-decoder"
    if any(hint in name for hint in LLM_NAME_HINTS):
        return "llm"
    return None


def known_decoder_layers(model_source: str) -> int | None:
    name = model_source.lower()
    if "whisper" not in name:
        return None
    for fragment, layers in WHISPER_DECODER_LAYERS:
        if fragment in name:
            return layers
    return None


def initial_learning_rate(
    family: str,
    lr_min: float,
    lr_max: float,
    *,
    baseline_wer: float | None = None,
    decoder_layers: int | None = None,
    override: float | None = None,
) -> tuple[float, str]:
    """Cycle 0's LR and the reason, as recorded in the status."""
    if family == "llm":
        if baseline_wer is None:
            raise ValueError("the llm family needs the baseline WER for Eq. 2")
        lr = eq2_learning_rate(baseline_wer, lr_min, lr_max)
        return lr, f"Eq. 2 from baseline WER {baseline_wer:.2f}%"
    if override is not None:
        return override, "spec.training.initialLearningRate"
    if decoder_layers is not None and decoder_layers >= DEEP_DECODER_LAYERS:
        return lr_min, f"η_min: deep decoder ({decoder_layers} layers)"
    return math.sqrt(lr_min * lr_max), "geometric mean of the LR bounds"


@dataclass(frozen=True)
class ScheduleSettings:
    family: str
    lr_min: float
    lr_max: float
    sigma_ref: float
    evals_per_cycle: int
    patience: int
    min_improvement: float
    max_cycles: int | None = None

    @classmethod
    def from_spec(cls, training: TrainingSpec, family: str) -> ScheduleSettings:
        lr_min, lr_max = lr_bounds(training, family)
        return cls(
            family=family,
            lr_min=lr_min,
            lr_max=lr_max,
            sigma_ref=training.sigma_ref,
            # A cycle is closed by its last evaluation: cycle_steps / eval_every of them.
            evals_per_cycle=max(1, training.cycle_steps // training.eval_every),
            patience=training.early_stopping.patience,
            min_improvement=training.early_stopping.min_improvement,
            max_cycles=training.max_cycles,
        )


def lr_bounds(training: TrainingSpec, family: str) -> tuple[float, float]:
    if training.learning_rate is not None:
        return training.learning_rate.min, training.learning_rate.max
    return DEFAULT_LR_BOUNDS[family]


@dataclass(frozen=True)
class BestWer:
    wer: float
    step: int


def best_evaluation(history: Sequence[Evaluation]) -> BestWer | None:
    """Lowest WER; the earliest step wins a tie (it is the cheaper checkpoint)."""
    best: BestWer | None = None
    for evaluation in sorted(history, key=lambda e: e.step):
        if best is None or evaluation.wer < best.wer:
            best = BestWer(evaluation.wer, evaluation.step)
    return best


def plateaued(wers: Sequence[float], patience: int, min_improvement: float) -> bool:
    """True when the last `patience` WERs brought no improvement of `min_improvement` points.

    The reference is the best WER so far; a noisy series that keeps reaching new
    lows by at least `min_improvement` resets the count each time.
    """
    best = math.inf
    since = 0
    for wer in wers:
        if wer < best - min_improvement:
            best = wer
            since = 0
        else:
            best = min(best, wer)
            since += 1
    return since >= patience


@dataclass(frozen=True)
class Decision:
    """What the schedule wants now; `closed_cycle` is set when a cycle ended."""

    directive: Directive
    closed_cycle: int | None = None
    sigma_wer: float | None = None
    cycle_wers: tuple[float, ...] = ()
    changed: bool = False


def cycle_wers(history: Sequence[Evaluation], cycle: int) -> list[float]:
    return [e.wer for e in sorted(history, key=lambda e: e.step) if e.cycle == cycle]


def cycle_window(history: Sequence[Evaluation], cycle: int, evals_per_cycle: int) -> list[float]:
    """The WERs that close a cycle: its first `evals_per_cycle` evaluations.

    The trainer keeps evaluating at the old LR until it reads the next directive;
    those late evaluations still belong to the cycle but not to its σ, so the
    decision depends on the history alone and not on when the operator looked.
    """
    return cycle_wers(history, cycle)[:evals_per_cycle]


def decide(
    settings: ScheduleSettings, current: Directive, history: Sequence[Evaluation]
) -> Decision:
    """The directive that should be in force given everything measured so far.

    Idempotent: calling it again with the directive it returned and the same
    history returns that directive unchanged, so a restarted operator never
    takes a decision twice.
    """
    if current.stop:
        return Decision(directive=current)
    ordered = sorted(history, key=lambda e: e.step)
    all_wers = [e.wer for e in ordered]
    if all_wers and plateaued(all_wers, settings.patience, settings.min_improvement):
        best = best_evaluation(ordered)
        assert best is not None
        reason = (
            f"early stop: no improvement of {settings.min_improvement} WER points in "
            f"{settings.patience} evaluations; best {best.wer:.2f}% at step {best.step}"
        )
        return Decision(
            directive=current.model_copy(update={"stop": True, "reason": reason}), changed=True
        )
    wers = cycle_window(ordered, current.cycle, settings.evals_per_cycle)
    if len(wers) < settings.evals_per_cycle:
        return Decision(directive=current)
    spread = sigma(wers)
    next_cycle = current.cycle + 1
    if settings.max_cycles is not None and next_cycle >= settings.max_cycles:
        reason = f"max cycles ({settings.max_cycles}) reached"
        return Decision(
            directive=current.model_copy(update={"stop": True, "reason": reason}),
            closed_cycle=current.cycle,
            sigma_wer=spread,
            cycle_wers=tuple(wers),
            changed=True,
        )
    if settings.family == "llm":
        mean = statistics.fmean(wers)
        lr = eq2_learning_rate(mean, settings.lr_min, settings.lr_max)
        reason = f"Eq. 2 from cycle {current.cycle} mean WER {mean:.2f}%"
    else:
        lr = eq1_learning_rate(spread, settings.lr_min, settings.lr_max, settings.sigma_ref)
        reason = f"Eq. 1 from cycle {current.cycle} σ_WER {spread:.3f}"
    return Decision(
        directive=Directive(cycle=next_cycle, learning_rate=lr, reason=reason),
        closed_cycle=current.cycle,
        sigma_wer=spread,
        cycle_wers=tuple(wers),
        changed=True,
    )
