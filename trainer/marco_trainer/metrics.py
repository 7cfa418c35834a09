"""The trainer's Prometheus series (rank 0 only), named by Prometheus's conventions.

Base units and suffixes: ratios end in `_ratio` (WER 0.25 = 25 %), durations are
`_seconds` histograms, memory `_bytes`, things that only go up `_total` counters
(rates are PromQL's job, not the exporter's), times `_timestamp_seconds`. Every
series carries the label `adaptation`; in a cluster the PodMonitor adds the
target's `namespace` and `pod`.

A gauge whose value means nothing before its first observation (the WER before
any evaluation, the loss before any step) has no sample until then, instead of a
0 that a dashboard would draw as a perfect WER.

Series renamed in 0.2 (no alias is served: dashboards, rules and tests use the new
names; the migration table is in the README's "Metrics and dashboard"):
`marco_trainer_wer` (percent) → `marco_trainer_validation_wer_ratio`,
`marco_trainer_best_wer` → `marco_trainer_best_validation_wer_ratio`,
`marco_trainer_samples_per_second` / `_tokens_per_second` (gauges) →
`marco_trainer_samples_total` / `_tokens_total` (counters).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from marco_trainer import __version__

if TYPE_CHECKING:
    from marco_contract.formats import Evaluation

PREFIX = "marco_trainer_"
LABEL = "adaptation"
#: One optimizer step: tens of milliseconds (a tiny model on CPU) to a minute (a large
#: model with gradient accumulation across nodes).
STEP_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
#: One validation pass: seconds (the demo) to an hour (thousands of utterances, an LLM).
EVALUATION_DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


def percent_to_ratio(wer_percent: float) -> float:
    """The Evaluation's WER (percent, the contract's unit) as Prometheus's 0..1 ratio."""
    return wer_percent / 100.0


class TrainerMetrics:
    """The trainer's metrics in a private registry, labelled by adaptation name."""

    def __init__(self, adaptation: str, version: str = __version__) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.adaptation = adaptation
        self.registry = CollectorRegistry(auto_describe=True)
        labels = [LABEL]

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(PREFIX + name, doc, labels, registry=self.registry)

        def counter(name: str, doc: str) -> Counter:
            # prometheus_client appends `_total`; the name here is without it.
            return Counter(PREFIX + name, doc, labels, registry=self.registry)

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(PREFIX + name, doc, labels, buckets=buckets, registry=self.registry)

        # -- samples only after their first observation -------------------------------
        self._validation_wer = gauge(
            "validation_wer_ratio",
            "Validation word error rate of the latest evaluation, as a ratio (0.25 = 25 %; "
            "above 1 when insertions outnumber the reference words).",
        )
        self._best_validation_wer = gauge(
            "best_validation_wer_ratio",
            "Lowest validation WER reached so far (ratio): the checkpoint kept as best.",
        )
        self._baseline_wer = gauge(
            "baseline_wer_ratio",
            "WER of the pre-trained model on the validation subset (ratio), from the "
            "baseline stage; absent when the run has no baseline.",
        )
        self._loss = gauge("loss", "Training loss of the latest finite optimizer step.")
        self._last_step = gauge(
            "last_step_timestamp_seconds", "Unix time of the latest optimizer step."
        )
        self._last_evaluation = gauge(
            "last_evaluation_timestamp_seconds", "Unix time of the latest validation evaluation."
        )
        self._gpu_allocated = gauge(
            "gpu_memory_allocated_bytes",
            "Device memory held by tensors on rank 0's GPU after the latest step "
            "(torch.cuda.memory_allocated); absent on CPU.",
        )
        self._gpu_max_allocated = gauge(
            "gpu_memory_max_allocated_bytes",
            "Peak device memory held by tensors on rank 0's GPU since the trainer started "
            "(torch.cuda.max_memory_allocated); absent on CPU.",
        )

        # Rank 0 serves before it loads the model and resumes: until then it does not
        # know its step, cycle or LR, and a 0 would draw a dip in every curve.
        self._learning_rate = gauge("learning_rate", "Learning rate in force.")
        self._step = gauge(
            "step", "Optimizer step rank 0 is at (a resumed run starts at its checkpoint's)."
        )
        self._cycle = gauge("cycle", "Training cycle of the directive in force.")

        # -- samples from the start -----------------------------------------------------
        self.start_time = gauge(
            "start_time_seconds", "Unix time this trainer started serving metrics."
        ).labels(adaptation)
        self.steps = counter(
            "steps", "Optimizer steps taken by this process (non-finite ones included)."
        ).labels(adaptation)
        self.samples = counter(
            "samples", "Training utterances consumed, all ranks together."
        ).labels(adaptation)
        self.tokens = counter("tokens", "Target tokens trained on, all ranks together.").labels(
            adaptation
        )
        self.evaluations = counter("evaluations", "Validation evaluations taken.").labels(
            adaptation
        )
        self.nonfinite_steps = counter(
            "nonfinite_steps", "Optimizer steps skipped for a non-finite loss or gradient."
        ).labels(adaptation)
        self.rollbacks = counter("rollbacks", "Rollbacks to the best checkpoint.").labels(
            adaptation
        )
        self.skipped_audio = counter(
            "skipped_audio", "Training utterances skipped as unreadable."
        ).labels(adaptation)
        self.step_duration = histogram(
            "step_duration_seconds",
            "Wall time of one optimizer step on rank 0 (forward, backward, all-reduce, update).",
            STEP_DURATION_BUCKETS,
        ).labels(adaptation)
        self.evaluation_duration = histogram(
            "evaluation_duration_seconds",
            "Wall time of one validation evaluation (decoding, scoring, checkpoint saves).",
            EVALUATION_DURATION_BUCKETS,
        ).labels(adaptation)
        Gauge(
            PREFIX + "build_info",
            "Always 1; the marco-asr version of the trainer in the label `version`.",
            [LABEL, "version"],
            registry=self.registry,
        ).labels(adaptation, version).set(1)
        self.start_time.set(time.time())

    def observe_step(
        self,
        *,
        step: int,
        duration_seconds: float,
        samples: float,
        tokens: float,
        loss: float | None,
        gpu_memory: tuple[int, int] | None = None,
        at: float | None = None,
    ) -> None:
        """One optimizer step: `loss` None when it was non-finite (the gauge keeps the last
        finite one); `gpu_memory` (allocated, peak) in bytes, None on CPU."""
        if duration_seconds < 0:
            raise ValueError(f"step duration must be >= 0, got {duration_seconds}")
        self.observe_position(step)
        self.steps.inc()
        self.samples.inc(samples)
        self.tokens.inc(tokens)
        self.step_duration.observe(duration_seconds)
        if loss is not None:
            self._loss.labels(self.adaptation).set(loss)
        if gpu_memory is not None:
            allocated, peak = gpu_memory
            self._gpu_allocated.labels(self.adaptation).set(allocated)
            self._gpu_max_allocated.labels(self.adaptation).set(peak)
        self._last_step.labels(self.adaptation).set(time.time() if at is None else at)

    def observe_evaluation(
        self, evaluation: Evaluation, best_wer: float | None, duration_seconds: float
    ) -> None:
        """One evaluation; `best_wer` in percent (the contract's unit), as the Evaluation's."""
        if duration_seconds < 0:
            raise ValueError(f"evaluation duration must be >= 0, got {duration_seconds}")
        self._validation_wer.labels(self.adaptation).set(percent_to_ratio(evaluation.wer))
        if best_wer is not None:
            self._best_validation_wer.labels(self.adaptation).set(percent_to_ratio(best_wer))
        self.evaluations.inc()
        self.evaluation_duration.observe(duration_seconds)
        self._last_evaluation.labels(self.adaptation).set(evaluation.time)

    def observe_directive(self, learning_rate: float, cycle: int) -> None:
        self._learning_rate.labels(self.adaptation).set(learning_rate)
        self._cycle.labels(self.adaptation).set(cycle)

    def observe_position(self, step: int) -> None:
        """The step rank 0 is at: after the resume, then after every step."""
        self._step.labels(self.adaptation).set(step)

    def observe_baseline(self, wer_percent: float) -> None:
        self._baseline_wer.labels(self.adaptation).set(percent_to_ratio(wer_percent))
