import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.optimize import isotonic_regression

from marco_contract.formats import Directive, Evaluation
from marco_operator.schedule import (
    ScheduleSettings,
    best_evaluation,
    decide,
    descending_fit,
    descent_residual_sigma,
    eq1_learning_rate,
    eq2_learning_rate,
    family_from_name,
    initial_learning_rate,
    known_decoder_layers,
    noise_excess_sigma,
    plateaued,
    plateaued_cumulative,
    sigma,
    trend_residual_sigma,
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
    # Eq. 2 needs the baseline only when no initial LR is given.
    assert initial_learning_rate("llm", 1e-6, 1e-4, override=5e-5) == (
        5e-5, "spec.training.initialLearningRate",
    )  # fmt: skip


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


# --- issue 16: the trend-residual σ and the cumulative early stop (both ours, off by default)

#: The demo's bounds (examples/demo-local.yaml): η_min = 1e-6, η_max = 5e-5, σ_ref = 0.5;
#: η_max − η_min = 4.9e-5.
DEMO_LO, DEMO_HI = 1e-6, 5e-5
DEMO_CYCLE_0 = [43.8, 31.2, 28.9]  # the demo's cycle 0, at steps 25, 50, 75
STEPS = [25.0, 50.0, 75.0]


def demo_settings(**overrides):
    return settings(lr_min=DEMO_LO, lr_max=DEMO_HI, **overrides)


def test_demo_cycle_0_reads_unstable_under_the_population_sigma():
    # Mean (43.8 + 31.2 + 28.9) / 3 = 103.9 / 3 = 34.63333; deviations 9.16667, −3.43333,
    # −5.73333; squares 84.02778 + 11.78778 + 32.87111 = 128.68667; / 3 = 42.89556;
    # σ = sqrt(42.89556) = 6.54947, thirteen times σ_ref: clip(σ / σ_ref) = 1 → η_min.
    assert sigma(DEMO_CYCLE_0) == pytest.approx(6.54947, abs=1e-5)
    decision = decide(
        demo_settings(),
        Directive(cycle=0, learning_rate=1e-5),
        evals(DEMO_CYCLE_0, start=25, every=25),
    )
    assert decision.sigma_kind == "population"
    assert decision.directive.learning_rate == pytest.approx(DEMO_LO, rel=1e-12)
    assert decision.directive.reason == "Eq. 1 from cycle 0 σ_WER 6.549"


def test_demo_cycle_0_still_reads_unstable_around_its_trend():
    # Least squares by hand: x̄ = 50, Sxx = 25² + 0 + 25² = 1250,
    # Sxy = −25 · 43.8 + 0 · 31.2 + 25 · 28.9 = 25 · (28.9 − 43.8) = −372.5,
    # slope = −372.5 / 1250 = −0.298 WER points a step, intercept = 34.63333 + 0.298 · 50
    # = 49.53333; the line at 25, 50, 75: 42.08333, 34.63333, 27.18333; residuals
    # 1.71667, −3.43333, 1.71667; squares 2.94694 + 11.78778 + 2.94694 = 17.68167; / 3
    # = 5.89389; σ = 2.42773. The drop is not a line (−12.6 then −2.3), so the spread
    # around it is still five times σ_ref: η_min as well.
    assert trend_residual_sigma(STEPS, DEMO_CYCLE_0) == pytest.approx(2.42773, abs=1e-5)
    decision = decide(
        demo_settings(sigma_kind="trend-residual"),
        Directive(cycle=0, learning_rate=1e-5),
        evals(DEMO_CYCLE_0, start=25, every=25),
    )
    assert decision.sigma_kind == "trend-residual"
    assert decision.sigma_wer == pytest.approx(2.42773, abs=1e-5)
    assert decision.directive.learning_rate == pytest.approx(DEMO_LO, rel=1e-12)
    assert decision.directive.reason == "Eq. 1 from cycle 0 σ_WER (trend-residual) 2.428"


def test_a_steady_descent_reads_stable_around_its_trend_only():
    wers = [40.0, 38.0, 36.1]
    # Population: mean 38.03333, deviations 1.96667, −0.03333, −1.93333; squares
    # 3.86778 + 0.00111 + 3.73778 = 7.60667; / 3 = 2.53556; σ = 1.59235 → η_min.
    # Trend: Sxy = 25 · (36.1 − 40) = −97.5, slope = −97.5 / 1250 = −0.078,
    # intercept = 38.03333 + 0.078 · 50 = 41.93333; line 39.98333, 38.03333, 36.08333;
    # residuals 1/60, −1/30, 1/60; squares 1/3600 + 4/3600 + 1/3600 = 1/600; / 3 = 1/1800;
    # σ = 0.0235702. η = 5e-5 − 4.9e-5 · 0.0235702 / 0.5 = 5e-5 − 2.309880e-6 = 4.769012e-5.
    assert sigma(wers) == pytest.approx(1.59235, abs=1e-5)
    assert trend_residual_sigma(STEPS, wers) == pytest.approx(0.0235702, rel=1e-5)
    history = evals(wers, start=25, every=25)
    current = Directive(cycle=0, learning_rate=1e-5)
    paper = decide(demo_settings(), current, history)
    ours = decide(demo_settings(sigma_kind="trend-residual"), current, history)
    assert paper.directive.learning_rate == pytest.approx(DEMO_LO, rel=1e-12)
    assert ours.directive.learning_rate == pytest.approx(4.769012e-5, rel=1e-6)


def test_a_noisy_flat_cycle_reads_unstable_either_way():
    wers = [30.0, 33.0, 29.0]
    # Population: mean 30.66667, deviations −0.66667, 2.33333, −1.66667; squares sum
    # 26/3, / 3 = 26/9; σ = 1.69967. Trend: Sxy = 25 · (29 − 30) = −25, slope −0.02,
    # intercept 30.66667 + 1 = 31.66667; line 31.16667, 30.66667, 30.16667; residuals
    # −7/6, 7/3, −7/6; squares (49/36)(1 + 4 + 1) = 49/6, / 3 = 49/18; σ = 1.64992.
    # Both above σ_ref: η_min.
    assert sigma(wers) == pytest.approx(1.69967, abs=1e-5)
    assert trend_residual_sigma(STEPS, wers) == pytest.approx(1.64992, abs=1e-5)
    history = evals(wers, start=25, every=25)
    for kind in ("population", "trend-residual"):
        decision = decide(
            demo_settings(sigma_kind=kind), Directive(cycle=0, learning_rate=1e-5), history
        )
        assert decision.directive.learning_rate == pytest.approx(DEMO_LO, rel=1e-12), kind


def test_trend_residual_sigma_of_two_points_is_zero_and_lengths_must_match():
    assert trend_residual_sigma([25.0, 50.0], [40.0, 10.0]) == 0.0  # a line through both
    with pytest.raises(ValueError, match="2 steps for 3 WERs"):
        trend_residual_sigma([25.0, 50.0], [1.0, 2.0, 3.0])


#: The issue's steady slow descent: 0.06 WER points an evaluation.
SLOW = [30.00, 29.94, 29.88, 29.82, 29.76, 29.70]


def test_a_slow_descent_is_a_plateau_to_the_per_evaluation_reading():
    # patience 3, threshold 0.1: each evaluation beats the best by 0.06 < 0.1, so the count
    # runs 1, 2, 3 at the 2nd, 3rd and 4th evaluation: stopped after 4.
    assert not plateaued(SLOW[:3], patience=3, min_improvement=0.1)
    assert plateaued(SLOW[:4], patience=3, min_improvement=0.1)


def test_the_cumulative_reading_lets_a_slow_descent_go_on_and_stops_a_plateau():
    # Over any 3 evaluations the best falls 3 · 0.06 = 0.18 ≥ 0.1: never a stop.
    for n in range(1, len(SLOW) + 1):
        assert not plateaued_cumulative(SLOW[:n], patience=3, min_improvement=0.1), n
    flat = [*SLOW, 29.70, 29.70, 29.70]
    # 7th: best before the last three (of the first four) 29.82, now 29.70: 0.12, goes on.
    assert not plateaued_cumulative(flat[:7], patience=3, min_improvement=0.1)
    # 8th: best of the first five 29.76, now 29.70: 0.06 < 0.1, a plateau.
    assert plateaued_cumulative(flat[:8], patience=3, min_improvement=0.1)


def test_decide_uses_the_early_stopping_mode():
    # evals_per_cycle 10: no cycle closes, only the stop rule can act.
    history = evals(SLOW[:4])
    current = Directive(cycle=0, learning_rate=1e-6)
    per_eval = decide(settings(patience=3, evals_per_cycle=10), current, history)
    assert per_eval.directive.stop
    assert per_eval.directive.reason == (
        "early stop: no improvement of 0.1 WER points in 3 evaluations; best 29.82% at step 200"
    )
    cumulative = settings(patience=3, evals_per_cycle=10, early_stopping="cumulative")
    assert not decide(cumulative, current, history).changed
    stopped = decide(cumulative, current, evals([*SLOW, 29.70, 29.70]))
    assert stopped.directive.stop
    assert stopped.directive.reason == (
        "early stop: no improvement of 0.1 WER points in 3 evaluations together; "
        "best 29.70% at step 300"
    )


# --- issue 16: the spread beyond the validation subset's sampling noise (ours, off by default)


def with_se(wers, errors):
    return [e.model_copy(update={"wer_se": se}) for e, se in zip(evals(wers), errors, strict=True)]


def test_noise_excess_subtracts_the_mean_squared_standard_error_from_the_variance():
    # Population variance of 30, 33, 29: mean 30.667, deviations −0.667, 2.333, −1.667:
    # (0.4444 + 5.4444 + 2.7778) / 3 = 2.8889. Mean SE² of 1, 1.2, 0.8: (1 + 1.44 + 0.64) / 3
    # = 1.0267. sqrt(2.8889 − 1.0267) = sqrt(1.8622) = 1.36463.
    assert noise_excess_sigma([30.0, 33.0, 29.0], [1.0, 1.2, 0.8]) == pytest.approx(1.36463, 1e-4)
    # Within the noise: 0, not an imaginary number.
    assert noise_excess_sigma([30.0, 31.0, 30.5], [4.0, 4.0, 4.0]) == 0.0
    # No standard errors measured (an older trainer): the population σ.
    assert noise_excess_sigma([30.0, 33.0, 29.0], [None, None, None]) == pytest.approx(
        math.sqrt(26 / 9)
    )


def test_a_cycle_that_moves_within_its_subsets_noise_keeps_a_large_lr():
    # A 40-utterance subset: SE about 4 WER points. The population σ (1.70) reads as
    # unstable (η_min); beyond the noise there is nothing, so Eq. 1 gives η_max.
    history = with_se([30.0, 33.0, 29.0], [4.0, 4.2, 3.9])
    current = Directive(cycle=0, learning_rate=1e-6)
    paper = decide(settings(), current, history)
    ours = decide(settings(sigma_kind="noise-excess"), current, history)
    assert paper.directive.learning_rate == pytest.approx(LO)
    assert ours.directive.learning_rate == pytest.approx(HI)
    assert ours.sigma_kind == "noise-excess"
    assert ours.directive.reason == "Eq. 1 from cycle 0 σ_WER (noise-excess) 0.000"


def test_noise_excess_reads_the_paired_change_when_measured():
    # Changes' SEs 0.6 and 0.8: noise variance (0.36 + 0.64) / 2 / 2 = 0.25. Population
    # variance of 39.8, 42.2, 43.4: mean 41.8, deviations −2, 0.4, 1.6: (4 + 0.16 + 2.56) / 3
    # = 2.24. sqrt(2.24 − 0.25) = sqrt(1.99).
    got = noise_excess_sigma([39.8, 42.2, 43.4], [3.5, 3.8, 4.0], [0.6, 0.8])
    assert got == pytest.approx(math.sqrt(1.99))
    # The same cycle read against the unpaired SEs: all noise.
    assert noise_excess_sigma([39.8, 42.2, 43.4], [3.5, 3.8, 4.0]) == 0.0


def test_a_steady_rise_beyond_the_paired_noise_lowers_the_lr():
    # Each evaluation's own SE is near 4 points, its change since the previous under 1: the
    # rise of 3.6 points over the cycle is the model's, not the subset's, and Eq. 1 reads it.
    history = [
        e.model_copy(update={"wer_se": se, "wer_change_se": change})
        for e, se, change in zip(
            evals([39.8, 42.2, 43.4]), [3.5, 3.8, 4.0], [None, 0.6, 0.8], strict=True
        )
    ]
    decision = decide(settings(sigma_kind="noise-excess"), Directive(cycle=0, learning_rate=HI),
                      history)  # fmt: skip
    assert decision.sigma_wer == pytest.approx(math.sqrt(1.99))
    assert decision.directive.learning_rate == pytest.approx(LO)  # σ 1.41 > σ_ref 0.5


# --- issue 16: the spread around the cycle's best descent, beyond the paired noise (ours)


@given(st.lists(st.floats(0.0, 200.0, allow_nan=False), min_size=1, max_size=12))
def test_descending_fit_is_scipys_isotonic_regression(values):
    expected = isotonic_regression(values, increasing=False).x
    assert descending_fit(values) == pytest.approx(list(expected), abs=1e-9)


def with_noise(wers, change_errors):
    """Evaluations 20 steps apart with the paired change SEs given (None for the first)."""
    return [
        e.model_copy(update={"wer_se": 3.0, "wer_change_se": change})
        for e, change in zip(evals(wers), [None, *change_errors], strict=True)
    ]


def test_a_fast_then_slow_descent_reads_stable_where_the_other_readings_read_unstable():
    # voip's FT cycle 0 (benchmark, 2026-12-03): 59.11 → 42.75 → 40.89, non-increasing, so it
    # is its own best descending fit: spread 0. Population σ: mean 47.5833, deviations
    # 11.5267, −4.8333, −6.6933: σ² = (132.864 + 23.361 + 44.801) / 3 = 67.009, σ 8.19.
    # Linear fit: slope (40.89 − 59.11) / 40 = −0.4555 a step; residuals 2.4167, −4.8333,
    # 2.4167: σ = sqrt((5.8404 · 2 + 23.361) / 3) = 3.4177.
    wers = [59.11, 42.75, 40.89]
    assert descent_residual_sigma(wers) == 0.0
    assert sigma(wers) == pytest.approx(8.1859, abs=1e-3)
    assert trend_residual_sigma([20.0, 40.0, 60.0], wers) == pytest.approx(3.4177, abs=1e-3)
    history = with_noise(wers, [1.8, 1.2])
    current = Directive(cycle=0, learning_rate=HI)
    for kind, lr in (("descent-excess", HI), ("noise-excess", LO), ("trend-residual", LO)):
        assert decide(settings(sigma_kind=kind), current, history).directive.learning_rate == (
            pytest.approx(lr)
        ), kind


def test_a_rise_beyond_the_paired_noise_lowers_the_lr_as_noise_excess_does():
    # car's FT + DA cycle 0: 39.76 → 42.21 → 43.39 rises throughout, so the fit pools all
    # three into their mean 41.7867 and the spread is the population σ: deviations −2.0267,
    # 0.4233, 1.6033, σ² = (4.1074 + 0.1792 + 2.5707) / 3 = 2.2858. Paired noise with change
    # SEs 1.59 and 1.29: (2.5281 + 1.6641) / 2 / 2 = 1.04805. sqrt(2.2858 − 1.04805) = 1.1125.
    history = with_noise([39.76, 42.21, 43.39], [1.59, 1.29])
    decision = decide(settings(sigma_kind="descent-excess"), Directive(cycle=0, learning_rate=HI),
                      history)  # fmt: skip
    assert decision.sigma_wer == pytest.approx(1.1125, abs=1e-3)
    assert decision.directive.learning_rate == pytest.approx(LO)  # 1.11 > σ_ref 0.5
    assert decision.sigma_kind == "descent-excess"


def test_a_bounce_counts_only_its_rise_and_the_noise_absorbs_a_small_one():
    # car's FT cycle 0: 43.10 → 42.02 → 43.19. The fit keeps 43.10 and pools the last two
    # into 42.605: residuals 0, −0.585, 0.585, spread sqrt(2 · 0.342225 / 3) = 0.47766
    # (population σ 0.5304). Paired noise, change SEs 1.81 and 1.19: (3.2761 + 1.4161) / 4
    # = 1.17305, more than 0.47766² = 0.22816: nothing left, η_max.
    wers = [43.10, 42.02, 43.19]
    assert descent_residual_sigma(wers) == pytest.approx(0.47766, abs=1e-4)
    decision = decide(settings(sigma_kind="descent-excess"), Directive(cycle=0, learning_rate=LO),
                      with_noise(wers, [1.81, 1.19]))  # fmt: skip
    assert decision.sigma_wer == 0.0
    assert decision.directive.learning_rate == pytest.approx(HI)
    # Without any noise measured, the bounce alone: 0.4777 of σ_ref 0.5, near η_min.
    bare = decide(settings(sigma_kind="descent-excess"), Directive(cycle=0, learning_rate=LO),
                  evals(wers))  # fmt: skip
    assert bare.sigma_wer == pytest.approx(0.47766, abs=1e-4)
    assert bare.directive.learning_rate == pytest.approx(HI - (HI - LO) * 0.47766 / 0.5, rel=1e-3)
