import math

import pytest

from marco_contract.formats import Directive, Evaluation
from marco_operator.schedule import (
    ScheduleSettings,
    best_evaluation,
    decide,
    eq1_learning_rate,
    eq2_learning_rate,
    family_from_name,
    initial_learning_rate,
    known_decoder_layers,
    plateaued,
)

LO, HI = 1e-7, 1e-5


# Eq. 1 by hand with η_min = 1e-7, η_max = 1e-5 (η_max − η_min = 9.9e-6), σ_ref = 0.5.
@pytest.mark.parametrize(
    ("sigma", "expected"),
    [
        (0.0, 1e-5),  # stable cycle: clip(0) = 0 → η_max
        (0.5, 1e-7),  # σ = σ_ref: clip(1) = 1 → η_min
        (3.0, 1e-7),  # beyond σ_ref: clip(6) = 1 → η_min
        (0.25, 5.05e-6),  # halfway: 1e-5 − 9.9e-6 · 0.5 = 5.05e-6
        (0.1, 8.02e-6),  # 1e-5 − 9.9e-6 · 0.2 = 8.02e-6
    ],
)
def test_eq1_worked_examples(sigma, expected):
    assert eq1_learning_rate(sigma, LO, HI, sigma_ref=0.5) == pytest.approx(expected, rel=1e-12)


# Eq. 2 by hand with η'_min = 1e-6, η'_max = 1e-4 (η'_max − η'_min = 9.9e-5).
@pytest.mark.parametrize(
    ("wer0", "expected"),
    [
        (0, 1e-6),  # clip(0) / 100 = 0 → η'_min
        (50, 5.05e-5),  # 1e-6 + 9.9e-5 · 0.5 = 5.05e-5
        (100, 1e-4),  # η'_max
        (150, 1e-4),  # clip(150, 0, 100) = 100 → η'_max
    ],
)
def test_eq2_worked_examples(wer0, expected):
    assert eq2_learning_rate(wer0, 1e-6, 1e-4) == pytest.approx(expected, rel=1e-12)


def test_plateau_stops_and_noisy_improvement_does_not():
    plateau = [30.0, 25.0, 22.0, 22.05, 21.98, 22.1, 22.0, 22.02]
    assert plateaued(plateau, patience=5, min_improvement=0.1)
    assert not plateaued(plateau[:6], patience=5, min_improvement=0.1)
    # Fluctuating by ±2 points but reaching a new low every third evaluation.
    noisy = [40.0, 42.0, 39.0, 36.0, 38.5, 37.0, 33.0, 35.0, 34.0, 30.0, 32.5, 31.0, 27.0]
    assert not plateaued(noisy, patience=3, min_improvement=0.1)


def evals(wers, cycle_of=lambda i: 0, start=50, every=50):
    return [
        Evaluation(step=start + i * every, cycle=cycle_of(i), lr=1e-6, wer=w, time=float(i))
        for i, w in enumerate(wers)
    ]


def settings(**overrides):
    base = dict(
        family="encoder-decoder", lr_min=LO, lr_max=HI, sigma_ref=0.5, evals_per_cycle=3,
        patience=6, min_improvement=0.1,
    )  # fmt: skip
    return ScheduleSettings(**{**base, **overrides})


def test_decide_closes_a_cycle_with_eq1_and_is_idempotent():
    current = Directive(cycle=0, learning_rate=1e-6)
    # σ below σ_ref, so Eq. 1 is on its linear part (not clipped to an end):
    # population σ of 30.0, 29.8, 29.6 = sqrt((0.2² + 0² + 0.2²) / 3) = sqrt(0.08 / 3) = 0.1632993;
    # η = 1e-5 − 9.9e-6 · 0.1632993 / 0.5 = 1e-5 − 3.2333265e-6 = 6.7666735e-6.
    history = evals([30.0, 29.8, 29.6])
    decision = decide(settings(), current, history)
    assert decision.changed and decision.closed_cycle == 0
    assert decision.sigma_wer == pytest.approx(math.sqrt(0.08 / 3))
    assert decision.directive.cycle == 1
    assert decision.directive.learning_rate == pytest.approx(6.7666735e-6, rel=1e-7)
    again = decide(settings(), decision.directive, history)
    assert not again.changed and again.directive == decision.directive


def test_decide_waits_for_a_full_cycle():
    decision = decide(settings(), Directive(cycle=0, learning_rate=1e-6), evals([30.0, 29.0]))
    assert not decision.changed and decision.directive.cycle == 0


def test_decide_llm_reapplies_eq2_with_the_cycle_mean():
    decision = decide(
        settings(family="llm", lr_min=1e-6, lr_max=1e-4),
        Directive(cycle=0, learning_rate=5e-5),
        evals([20.0, 10.0, 30.0]),
    )
    # Mean of 20, 10, 30 = 20; η = 1e-6 + 9.9e-5 · 20 / 100 = 1e-6 + 1.98e-5 = 2.08e-5.
    assert decision.directive.learning_rate == pytest.approx(2.08e-5, rel=1e-9)


def test_decide_stops_on_plateau_and_names_the_best_step():
    history = evals([20.0, 19.0, 19.05, 19.02, 19.1, 19.0, 19.03, 19.04], cycle_of=lambda i: i // 3)
    current = Directive(cycle=2, learning_rate=1e-6)
    decision = decide(settings(patience=5), current, history)
    assert decision.directive.stop
    assert "step 100" in decision.directive.reason
    assert decide(settings(patience=5), decision.directive, history).directive.stop


def test_max_cycles_stops_at_the_boundary():
    decision = decide(
        settings(max_cycles=1), Directive(cycle=0, learning_rate=1e-6), evals([3, 2, 1])
    )
    assert decision.directive.stop and "max cycles" in decision.directive.reason


def test_best_evaluation_prefers_the_earliest_tie():
    best = best_evaluation(evals([5.0, 4.0, 4.0, 6.0]))
    assert (best.wer, best.step) == (4.0, 100)


def test_initial_learning_rate_rules():
    assert initial_learning_rate("encoder-decoder", LO, HI)[0] == pytest.approx(1e-6)
    deep, reason = initial_learning_rate("encoder-decoder", LO, HI, decoder_layers=32)
    assert deep == LO and "deep decoder" in reason
    assert initial_learning_rate("encoder-decoder", LO, HI, override=3e-6)[0] == 3e-6
    assert initial_learning_rate("llm", 1e-6, 1e-4, baseline_wer=100)[0] == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="baseline WER"):
        initial_learning_rate("llm", 1e-6, 1e-4)


def test_family_and_depth_from_hub_names():
    assert family_from_name("openai/whisper-large-v3") == "encoder-decoder"
    assert family_from_name("Qwen/Qwen2-Audio-7B-Instruct") == "llm"
    assert family_from_name("/data/models/mine") is None
    assert known_decoder_layers("openai/whisper-large-v3") == 32
    assert known_decoder_layers("openai/whisper-large-v3-turbo") == 4
    assert known_decoder_layers("Qwen/Qwen2-Audio-7B") is None


def test_late_evaluations_of_a_cycle_do_not_change_its_decision():
    """The operator may look late; evaluations past the cycle's window do not enter σ."""
    current = Directive(cycle=0, learning_rate=1e-6)
    on_time = decide(settings(), current, evals([30.0, 29.0, 28.0]))
    late = decide(settings(), current, evals([30.0, 29.0, 28.0, 20.0, 35.0]))
    # Both close cycle 0 on 30, 29, 28 alone (population σ sqrt(2/3) = 0.816, above σ_ref:
    # η_min); had the late 20 and 35 entered, σ would be 4.84 (same LR, but not the same σ).
    assert on_time.changed and on_time.directive.cycle == 1
    assert on_time.sigma_wer == pytest.approx(math.sqrt(2 / 3))
    assert late.directive == on_time.directive
    assert late.sigma_wer == on_time.sigma_wer
