"""The operator's own Prometheus metrics: reconciles, phases, decisions, errors.

Everything lives in one `OperatorMetrics` with its own CollectorRegistry, so
tests (and several operators in one process) never collide in the global
registry. The kopf driver calls the `observe_*` functions after each reconcile
and `start_metrics_server()` once at startup; they use the module's default
instance unless given another.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Protocol, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from marco_contract.status import Phase
from marco_operator import __version__

DEFAULT_PORT = 9090
PORT_ENV = "MARCO_METRICS_PORT"

#: Event reasons that record a decision of the schedule (core.reconcile emits them).
DECISION_REASONS: frozenset[str] = frozenset(
    {"TrialsDecided", "LearningRateSet", "LearningRateChanged", "EarlyStop", "StopNotHonoured"}
)
#: Every phase, so the gauge reports 0 instead of vanishing when a phase empties.
PHASES: tuple[str, ...] = get_args(Phase)

# Reconciles take milliseconds when nothing changes and seconds when the API is slow.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class HasReason(Protocol):
    reason: str


class OperatorMetrics:
    def __init__(
        self, registry: CollectorRegistry | None = None, version: str = __version__
    ) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        Gauge(
            "marco_operator_build_info",
            "Always 1; the operator's marco-asr version in the label `version`.",
            ["version"],
            registry=self.registry,
        ).labels(version).set(1)
        self.reconciles = Counter(
            "marco_operator_reconciles",
            "Reconciles of AsrAdaptations, by result (success or error).",
            ["result"],
            registry=self.registry,
        )
        self.reconcile_duration = Histogram(
            "marco_operator_reconcile_duration_seconds",
            "Wall time of one reconcile, gathering and applying included.",
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.adaptations = Gauge(
            "marco_operator_adaptations",
            "AsrAdaptations the operator sees, by phase.",
            ["phase"],
            registry=self.registry,
        )
        self.loops = Gauge(
            "marco_operator_reconcile_loops",
            "AsrAdaptations with a reconcile loop running: those not settled (finished or "
            "invalid adaptations have none).",
            registry=self.registry,
        )
        self.decisions = Counter(
            "marco_operator_decisions",
            "Schedule decisions (LR changes, early stops, suspensions), by Event reason.",
            ["reason"],
            registry=self.registry,
        )
        self.errors = Counter(
            "marco_operator_errors",
            "Errors met while reconciling, by kind (e.g. api, invalid-spec, not-allowed, trainer).",
            ["kind"],
            registry=self.registry,
        )
        for phase in PHASES:
            self.adaptations.labels(phase=phase).set(0)
        for result in ("success", "error"):
            self.reconciles.labels(result=result)

    def observe_reconcile(self, duration: float, ok: bool) -> None:
        if duration < 0:
            raise ValueError(f"reconcile duration must be >= 0, got {duration}")
        self.reconciles.labels(result="success" if ok else "error").inc()
        self.reconcile_duration.observe(duration)

    def observe_phases(self, phases: Mapping[str, str]) -> None:
        """Set the per-phase gauge from the current phase of every adaptation (name -> phase)."""
        counts = dict.fromkeys(PHASES, 0)
        for name, phase in phases.items():
            if phase not in counts:
                raise ValueError(f"adaptation {name!r} has unknown phase {phase!r}")
            counts[phase] += 1
        for phase, count in counts.items():
            self.adaptations.labels(phase=phase).set(count)

    def observe_loops(self, running: int) -> None:
        self.loops.set(running)

    def observe_events(self, events: Iterable[HasReason]) -> int:
        """Count the decisions among a reconcile's events; returns how many were counted."""
        counted = 0
        for event in events:
            if event.reason in DECISION_REASONS:
                self.decisions.labels(reason=event.reason).inc()
                counted += 1
        return counted

    def observe_error(self, kind: str) -> None:
        self.errors.labels(kind=kind).inc()


DEFAULT = OperatorMetrics()


def observe_reconcile(duration: float, ok: bool, metrics: OperatorMetrics = DEFAULT) -> None:
    metrics.observe_reconcile(duration, ok)


def observe_phases(phases: Mapping[str, str], metrics: OperatorMetrics = DEFAULT) -> None:
    metrics.observe_phases(phases)


def observe_events(events: Iterable[HasReason], metrics: OperatorMetrics = DEFAULT) -> int:
    return metrics.observe_events(events)


def observe_error(kind: str, metrics: OperatorMetrics = DEFAULT) -> None:
    metrics.observe_error(kind)


def metrics_port() -> int:
    """The port from MARCO_METRICS_PORT (the chart sets it), else 9090."""
    raw = os.environ.get(PORT_ENV, "")
    if not raw:
        return DEFAULT_PORT
    try:
        port = int(raw)
    except ValueError:
        raise ValueError(f"{PORT_ENV}={raw!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{PORT_ENV}={port} is out of range 0..65535")
    return port


def start_metrics_server(
    port: int | None = None, addr: str = "0.0.0.0", metrics: OperatorMetrics = DEFAULT
) -> tuple[str, int]:
    """Serve `/metrics` in a daemon thread; returns the bound (address, port)."""
    server, _thread = start_http_server(
        metrics_port() if port is None else port, addr=addr, registry=metrics.registry
    )
    host, bound = server.server_address[:2]
    return str(host), int(bound)
