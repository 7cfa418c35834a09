"""The trainer's series after a fake run of steps and evaluations: names, types, values.

Expected values are summed and bucketed here from the inputs, not read back from the
exporter's own arithmetic.
"""

import math
import tomllib

import pytest
import torch
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from marco_contract.formats import Evaluation
from marco_trainer.metrics import (
    EVALUATION_DURATION_BUCKETS,
    STEP_DURATION_BUCKETS,
    TrainerMetrics,
)
from marco_trainer.train.loop import gpu_memory
from tests.tools import ROOT

LABELS = {"adaptation": "demo"}
#: (duration s, samples, tokens, loss or None for a non-finite step)
STEPS = [
    (0.04, 8, 120, 2.5),
    (0.3, 8, 131, 2.25),
    (0.3, 6, 90, None),
    (7.0, 8, 101, 1.75),
    (200.0, 4, 60, 1.5),
]
#: (WER percent, duration s, time)
EVALUATIONS = [(42.0, 3.0, 1_800_000_000.0), (31.5, 700.0, 1_800_000_500.0)]


def families(metrics: TrainerMetrics) -> dict:
    text = generate_latest(metrics.registry).decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(metrics: TrainerMetrics) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in families(metrics).values()
        for s in family.samples
    }


def value(metrics: TrainerMetrics, name: str, **extra) -> float:
    return samples(metrics)[(name, tuple(sorted({**LABELS, **extra}.items())))]


def has(metrics: TrainerMetrics, name: str) -> bool:
    return any(key[0] == name for key in samples(metrics))


def run(metrics: TrainerMetrics, gpu: bool = False) -> None:
    for i, (duration, n, tokens, loss) in enumerate(STEPS, start=1):
        memory = (1000 * i, 5000 + i) if gpu else None
        metrics.observe_step(
            step=10 + i, duration_seconds=duration, samples=n, tokens=tokens, loss=loss,
            gpu_memory=memory, at=1_700_000_000.0 + i,
        )  # fmt: skip
    best = None
    for wer, duration, at in EVALUATIONS:
        best = wer if best is None else min(best, wer)
        evaluation = Evaluation(step=15, cycle=0, lr=1e-5, wer=wer, time=at)
        metrics.observe_evaluation(evaluation, best, duration_seconds=duration)


def test_names_and_types_follow_prometheus_conventions():
    found = {
        name: family.type
        for name, family in families(TrainerMetrics("demo")).items()
        # prometheus_client's creation time of each counter and histogram, in the text format
        if not name.endswith("_created")
    }
    expected = {
        "marco_trainer_validation_wer_ratio": "gauge",
        "marco_trainer_best_validation_wer_ratio": "gauge",
        "marco_trainer_baseline_wer_ratio": "gauge",
        "marco_trainer_loss": "gauge",
        "marco_trainer_learning_rate": "gauge",
        "marco_trainer_step": "gauge",
        "marco_trainer_cycle": "gauge",
        "marco_trainer_start_time_seconds": "gauge",
        "marco_trainer_last_step_timestamp_seconds": "gauge",
        "marco_trainer_last_evaluation_timestamp_seconds": "gauge",
        "marco_trainer_gpu_memory_allocated_bytes": "gauge",
        "marco_trainer_gpu_memory_max_allocated_bytes": "gauge",
        "marco_trainer_build_info": "gauge",
        "marco_trainer_steps": "counter",
        "marco_trainer_samples": "counter",
        "marco_trainer_tokens": "counter",
        "marco_trainer_evaluations": "counter",
        "marco_trainer_nonfinite_steps": "counter",
        "marco_trainer_rollbacks": "counter",
        "marco_trainer_skipped_audio": "counter",
        "marco_trainer_step_duration_seconds": "histogram",
        "marco_trainer_evaluation_duration_seconds": "histogram",
    }
    assert found == expected
    # The old names are gone, not served alongside (README: "Metrics and dashboard").
    assert not {"marco_trainer_wer", "marco_trainer_samples_per_second"} & set(found)


def test_values_after_a_fake_run():
    metrics = TrainerMetrics("demo")
    run(metrics)
    assert value(metrics, "marco_trainer_steps_total") == len(STEPS)
    assert value(metrics, "marco_trainer_samples_total") == sum(s[1] for s in STEPS)
    assert value(metrics, "marco_trainer_tokens_total") == sum(s[2] for s in STEPS)
    assert value(metrics, "marco_trainer_step") == 10 + len(STEPS)
    assert value(metrics, "marco_trainer_loss") == 1.5  # the last finite step's
    assert value(metrics, "marco_trainer_last_step_timestamp_seconds") == 1_700_000_000.0 + 5
    # Percent in the contract, ratio on the wire.
    assert value(metrics, "marco_trainer_validation_wer_ratio") == pytest.approx(0.315)
    assert value(metrics, "marco_trainer_best_validation_wer_ratio") == pytest.approx(0.315)
    assert value(metrics, "marco_trainer_evaluations_total") == 2
    assert value(metrics, "marco_trainer_last_evaluation_timestamp_seconds") == 1_800_000_500.0


def test_a_worse_evaluation_keeps_the_best_wer():
    metrics = TrainerMetrics("demo")
    for wer, best in ((30.0, 30.0), (45.0, 30.0)):
        evaluation = Evaluation(step=1, cycle=0, lr=1e-5, wer=wer, time=1.0)
        metrics.observe_evaluation(evaluation, best, duration_seconds=1.0)
    assert value(metrics, "marco_trainer_validation_wer_ratio") == pytest.approx(0.45)
    assert value(metrics, "marco_trainer_best_validation_wer_ratio") == pytest.approx(0.30)


@pytest.mark.parametrize(
    ("name", "bounds", "observed"),
    [
        ("marco_trainer_step_duration_seconds", STEP_DURATION_BUCKETS, [s[0] for s in STEPS]),
        (
            "marco_trainer_evaluation_duration_seconds",
            EVALUATION_DURATION_BUCKETS,
            [e[1] for e in EVALUATIONS],
        ),
    ],
)
def test_durations_land_in_their_buckets(name, bounds, observed):
    metrics = TrainerMetrics("demo")
    run(metrics)
    assert list(bounds) == sorted(bounds) and bounds[0] > 0
    for bound in bounds:
        expected = sum(d <= bound for d in observed)
        le = str(float(bound))
        assert value(metrics, f"{name}_bucket", le=le) == expected, bound
    assert value(metrics, f"{name}_bucket", le="+Inf") == len(observed)
    assert value(metrics, f"{name}_count") == len(observed)
    assert value(metrics, f"{name}_sum") == pytest.approx(sum(observed))


def test_bucket_bounds_span_a_tiny_cpu_step_to_an_llm_evaluation():
    assert STEP_DURATION_BUCKETS[0] <= 0.05 and STEP_DURATION_BUCKETS[-1] >= 60
    assert EVALUATION_DURATION_BUCKETS[0] <= 1 and EVALUATION_DURATION_BUCKETS[-1] >= 3600


def test_series_without_an_observation_have_no_sample():
    metrics = TrainerMetrics("demo")
    for name in (
        "marco_trainer_validation_wer_ratio",
        "marco_trainer_best_validation_wer_ratio",
        "marco_trainer_baseline_wer_ratio",
        "marco_trainer_loss",
        "marco_trainer_last_step_timestamp_seconds",
        "marco_trainer_last_evaluation_timestamp_seconds",
        "marco_trainer_gpu_memory_allocated_bytes",
        # Unknown until the model is loaded and the run resumed (rank 0 serves before).
        "marco_trainer_learning_rate",
        "marco_trainer_cycle",
        "marco_trainer_step",
    ):
        assert not has(metrics, name), name
    # Counters and histograms start at 0: a rate over them is defined from the start.
    assert value(metrics, "marco_trainer_steps_total") == 0
    assert value(metrics, "marco_trainer_step_duration_seconds_count") == 0


def test_gpu_memory_only_where_cuda_reported_it():
    on_cpu = TrainerMetrics("demo")
    run(on_cpu, gpu=False)
    assert not has(on_cpu, "marco_trainer_gpu_memory_allocated_bytes")
    assert not has(on_cpu, "marco_trainer_gpu_memory_max_allocated_bytes")
    help_text = families(on_cpu)["marco_trainer_gpu_memory_allocated_bytes"].documentation
    assert "absent on CPU" in help_text
    on_gpu = TrainerMetrics("demo")
    run(on_gpu, gpu=True)
    assert value(on_gpu, "marco_trainer_gpu_memory_allocated_bytes") == 1000 * len(STEPS)
    assert value(on_gpu, "marco_trainer_gpu_memory_max_allocated_bytes") == 5000 + len(STEPS)


def test_the_loop_reads_no_gpu_memory_on_cpu():
    assert gpu_memory(torch.device("cpu")) is None


def test_baseline_wer_as_a_ratio():
    metrics = TrainerMetrics("demo")
    metrics.observe_baseline(58.0)
    assert value(metrics, "marco_trainer_baseline_wer_ratio") == pytest.approx(0.58)


def test_directive_sets_learning_rate_and_cycle():
    metrics = TrainerMetrics("demo")
    metrics.observe_directive(3e-4, 2)
    assert value(metrics, "marco_trainer_learning_rate") == 3e-4
    assert value(metrics, "marco_trainer_cycle") == 2


def test_build_info_carries_the_package_version():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    metrics = TrainerMetrics("demo")
    assert value(metrics, "marco_trainer_build_info", version=version) == 1
    start = value(metrics, "marco_trainer_start_time_seconds")
    assert math.isfinite(start) and start > 1.7e9


@pytest.mark.parametrize("method", ["step", "evaluation"])
def test_a_negative_duration_is_refused(method):
    metrics = TrainerMetrics("demo")
    with pytest.raises(ValueError, match="duration"):
        if method == "step":
            metrics.observe_step(step=1, duration_seconds=-1, samples=1, tokens=1, loss=1.0)
        else:
            evaluation = Evaluation(step=1, cycle=0, lr=1e-5, wer=1.0, time=1.0)
            metrics.observe_evaluation(evaluation, 1.0, duration_seconds=-1)
