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

Readings that are ours, off by default (docs/method.md, "Readings and
deviations"): the spread of a cycle taken around its linear trend instead of
its mean (`trend-residual`), so that a steady descent reads as stable; the
spread beyond the validation subset's sampling noise (`noise-excess`), so that
a small subset's noise does not read as instability; the spread around the
cycle's best non-increasing fit, beyond that noise (`descent-excess`), so that
a descent of any shape reads as stable and only a rise or a bounce lowers the
LR; and an
early stop that measures the best WER's progress over the last `patience`
evaluations together (`cumulative`), so that a slow steady descent is not read
as a plateau.

WER is in percent everywhere. No I/O here.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from marco_contract.formats import Directive, Evaluation
from marco_contract.options import evals_per_cycle
from marco_contract.status import Family, SigmaKind
from marco_operator.api import DEFAULT_LR_BOUNDS, EarlyStoppingMode, TrainingSpec

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


def trend_residual_sigma(steps: Sequence[float], wers: Sequence[float]) -> float:
    """Spread of a cycle's WERs around their least-squares line against the step.

    A steady descent lies on its line and reads as stable, where the population σ
    reads the descent itself as spread. Divided by n like the population σ, so the
    two agree on a series without trend and this one is never the larger (the
    mean is one of the lines the fit chooses among). With two points or fewer a
    line goes through every point: 0.
    """
    if len(steps) != len(wers):
        raise ValueError(f"{len(steps)} steps for {len(wers)} WERs")
    n = len(wers)
    if n < 3:
        return 0.0
    mean_x, mean_y = statistics.fmean(steps), statistics.fmean(wers)
    sxx = sum((x - mean_x) ** 2 for x in steps)
    if sxx == 0:  # every WER at one step: no trend to take out
        return sigma(wers)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(steps, wers, strict=True)) / sxx
    intercept = mean_y - slope * mean_x
    residuals = [y - (intercept + slope * x) for x, y in zip(steps, wers, strict=True)]
    return math.sqrt(sum(r * r for r in residuals) / n)


def descending_fit(values: Sequence[float]) -> list[float]:
    """The least-squares non-increasing sequence nearest to `values` (isotonic regression
    by pooling adjacent violators: a value above its predecessor's block joins it, and
    the block takes their mean).

    By hand rather than scipy's `isotonic_regression`: the operator has no numerical
    dependency, and a cycle has a handful of evaluations. The tests compare the two."""
    blocks: list[tuple[float, int]] = []  # (sum, count) of each pooled run
    for value in values:
        total, count = value, 1
        while blocks and blocks[-1][0] / blocks[-1][1] < total / count:
            previous_total, previous_count = blocks.pop()
            total, count = total + previous_total, count + previous_count
        blocks.append((total, count))
    return [total / count for total, count in blocks for _ in range(count)]


def descent_residual_sigma(wers: Sequence[float]) -> float:
    """Spread of a cycle's WERs around their best non-increasing fit (:func:`descending_fit`),
    divided by n like the population σ.

    Any descent, steady or slowing, lies on its fit and reads 0, where the trend-residual
    σ still reads a curve (fast, then slow) as spread. A rise is pooled into its mean, so
    a steadily rising cycle reads its full population σ, and a bounce (down, up) reads
    the part that went up. Never larger than the population σ: a constant is one of the
    non-increasing sequences the fit chooses among."""
    if len(wers) < 2:
        return 0.0
    fit = descending_fit(wers)
    return math.sqrt(sum((w - f) ** 2 for w, f in zip(wers, fit, strict=True)) / len(wers))


def cycle_sigma(window: Sequence[Evaluation], kind: SigmaKind = "population") -> float:
    """σ_WER of Eq. 1 over a cycle's window, as `spec.training.sigma` chooses."""
    wers = [e.wer for e in window]
    if kind == "trend-residual":
        return trend_residual_sigma([float(e.step) for e in window], wers)
    errors = [e.wer_se for e in window]
    changes = [e.wer_change_se for e in window[1:]]
    if kind == "noise-excess":
        return noise_excess_sigma(wers, errors, changes)
    if kind == "descent-excess":
        return beyond_noise(descent_residual_sigma(wers), errors, changes)
    return sigma(wers)


def noise_excess_sigma(
    wers: Sequence[float],
    standard_errors: Sequence[float | None],
    change_errors: Sequence[float | None] = (),
) -> float:
    """The cycle's spread beyond what its validation subset's sampling alone would give:
    sqrt(max(0, σ² − noise variance)).

    The noise is how much two evaluations of the same subset differ by the draw of its
    utterances alone. Each evaluation's ``wer_change_se`` measures exactly that (the
    standard error of its change since the previous one, paired over the same
    utterances): with independent noise per evaluation, Var(change) = 2·Var(noise), so
    the noise variance is mean(change SE²) / 2. Without any (a window of first
    evaluations, or a trainer from before they were measured), each evaluation's own
    ``wer_se`` stands in, as mean(SE²): far larger, since it counts the hardness of the
    subset that every evaluation of it shares, so that reading calls nearly any cycle on
    a small subset stable (measured: a cycle that rose 39.8 → 42.2 → 43.4, σ 1.5, read
    as noise against an SE of 3.8). An evaluation with neither counts as noise-free."""
    return beyond_noise(sigma(wers), standard_errors, change_errors)


def beyond_noise(
    spread: float,
    standard_errors: Sequence[float | None],
    change_errors: Sequence[float | None] = (),
) -> float:
    """sqrt(max(0, spread² − noise variance)): a cycle's spread less its subset's noise."""
    return math.sqrt(max(0.0, spread**2 - noise_variance(standard_errors, change_errors)))


def noise_variance(
    standard_errors: Sequence[float | None], change_errors: Sequence[float | None] = ()
) -> float:
    """How much of a cycle's variance its validation subset's sampling explains, as
    :func:`noise_excess_sigma` reads it: mean(change SE²)/2, else mean(SE²), else 0."""
    changes = [c for c in change_errors if c is not None]
    if changes:
        return statistics.fmean(c * c for c in changes) / 2
    if standard_errors:
        return statistics.fmean((se or 0.0) ** 2 for se in standard_errors)
    return 0.0


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
    """Cycle 0's LR and the reason, as recorded in the status.

    `override` (spec.training.initialLearningRate) wins for either family: Eq. 2 needs the
    baseline WER only when no initial LR is given.
    """
    if override is not None:
        return override, "spec.training.initialLearningRate"
    if family == "llm":
        if baseline_wer is None:
            raise ValueError("the llm family needs the baseline WER for Eq. 2")
        lr = eq2_learning_rate(baseline_wer, lr_min, lr_max)
        return lr, f"Eq. 2 from baseline WER {baseline_wer:.2f}%"
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
    sigma_kind: SigmaKind = "population"
    early_stopping: EarlyStoppingMode = "per-evaluation"

    @classmethod
    def from_spec(cls, training: TrainingSpec, family: str) -> ScheduleSettings:
        lr_min, lr_max = lr_bounds(training, family)
        return cls(
            family=family,
            lr_min=lr_min,
            lr_max=lr_max,
            sigma_ref=training.sigma_ref,
            # A cycle is closed by its last evaluation: cycle_steps / eval_every of them.
            evals_per_cycle=evals_per_cycle(training.cycle_steps, training.eval_every),
            patience=training.early_stopping.patience,
            min_improvement=training.early_stopping.min_improvement,
            max_cycles=training.max_cycles,
            sigma_kind=training.sigma,
            early_stopping=training.early_stopping.mode,
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


def plateaued_cumulative(wers: Sequence[float], patience: int, min_improvement: float) -> bool:
    """True when the best WER fell by less than `min_improvement` over the last `patience` WERs.

    The best after all evaluations against the best before the last `patience` of
    them: a descent of 0.06 points an evaluation gains 0.18 over three and goes
    on, where :func:`plateaued` sees three gains under 0.1 and stops. Needs one
    evaluation before the window, so it stops after `patience` + 1 at the
    earliest, like :func:`plateaued`.
    """
    if len(wers) <= patience:
        return False
    return min(wers[:-patience]) - min(wers) < min_improvement


def stopped_early(
    wers: Sequence[float], patience: int, min_improvement: float, mode: EarlyStoppingMode
) -> bool:
    """The plateau test `spec.training.earlyStopping.mode` chooses."""
    if mode == "cumulative":
        return plateaued_cumulative(wers, patience, min_improvement)
    return plateaued(wers, patience, min_improvement)


@dataclass(frozen=True)
class Decision:
    """What the schedule wants now; `closed_cycle` is set when a cycle ended."""

    directive: Directive
    closed_cycle: int | None = None
    sigma_wer: float | None = None
    sigma_kind: SigmaKind | None = None
    cycle_wers: tuple[float, ...] = ()
    changed: bool = False


def cycle_wers(history: Sequence[Evaluation], cycle: int) -> list[float]:
    return [e.wer for e in sorted(history, key=lambda e: e.step) if e.cycle == cycle]


def window_evaluations(
    history: Sequence[Evaluation], cycle: int, evals_per_cycle: int
) -> list[Evaluation]:
    """The evaluations that close a cycle: its first `evals_per_cycle` ones.

    A trainer that does not wait at the boundary (`waitForDirective: false`, or a
    wait that timed out) keeps evaluating at the old LR until it reads the next
    directive; those late evaluations still belong to the cycle but not to its
    σ, so the decision depends on the history alone and not on when the
    operator looked.
    """
    ordered = sorted(history, key=lambda e: e.step)
    return [e for e in ordered if e.cycle == cycle][:evals_per_cycle]


def cycle_window(history: Sequence[Evaluation], cycle: int, evals_per_cycle: int) -> list[float]:
    """The WERs of :func:`window_evaluations`."""
    return [e.wer for e in window_evaluations(history, cycle, evals_per_cycle)]


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
    if all_wers and stopped_early(
        all_wers, settings.patience, settings.min_improvement, settings.early_stopping
    ):
        best = best_evaluation(ordered)
        assert best is not None
        over = " together" if settings.early_stopping == "cumulative" else ""
        reason = (
            f"early stop: no improvement of {settings.min_improvement} WER points in "
            f"{settings.patience} evaluations{over}; best {best.wer:.2f}% at step {best.step}"
        )
        return Decision(
            directive=current.model_copy(update={"stop": True, "reason": reason}), changed=True
        )
    window = window_evaluations(ordered, current.cycle, settings.evals_per_cycle)
    wers = [e.wer for e in window]
    if len(wers) < settings.evals_per_cycle:
        return Decision(directive=current)
    kind = settings.sigma_kind
    spread = cycle_sigma(window, kind)
    next_cycle = current.cycle + 1
    if settings.max_cycles is not None and next_cycle >= settings.max_cycles:
        reason = f"max cycles ({settings.max_cycles}) reached"
        return Decision(
            directive=current.model_copy(update={"stop": True, "reason": reason}),
            closed_cycle=current.cycle,
            sigma_wer=spread,
            sigma_kind=kind,
            cycle_wers=tuple(wers),
            changed=True,
        )
    if settings.family == "llm":
        mean = statistics.fmean(wers)
        lr = eq2_learning_rate(mean, settings.lr_min, settings.lr_max)
        reason = f"Eq. 2 from cycle {current.cycle} mean WER {mean:.2f}%"
    else:
        lr = eq1_learning_rate(spread, settings.lr_min, settings.lr_max, settings.sigma_ref)
        # The paper's σ keeps the reason it always had; ours says which it is.
        label = "" if kind == "population" else f" ({kind})"
        reason = f"Eq. 1 from cycle {current.cycle} σ_WER{label} {spread:.3f}"
    return Decision(
        directive=Directive(cycle=next_cycle, learning_rate=lr, reason=reason),
        closed_cycle=current.cycle,
        sigma_wer=spread,
        sigma_kind=kind,
        cycle_wers=tuple(wers),
        changed=True,
    )
