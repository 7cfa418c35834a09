"""A real Prometheus scrapes the operator's metrics server; the dashboard's queries answer."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import pytest

from marco_operator.dashboard import concrete, dashboard_queries
from marco_operator.metrics import OperatorMetrics, start_metrics_server
from tests.integration.deploy.conftest import query, targets_of, wait_for_series

PHASES = {"whisper-telephony": "Training", "qwen-meetings": "Training", "tiny-en": "Succeeded"}


@dataclass
class _Event:
    reason: str


class BusyOperator:
    """Feeds the metrics the way the kopf driver does, a reconcile every 50 ms."""

    def __init__(self, metrics: OperatorMetrics) -> None:
        self.metrics = metrics
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        tick = 0
        while not self.stop.wait(0.05):
            tick += 1
            self.metrics.observe_reconcile(0.004 + 0.001 * (tick % 7), ok=tick % 10 != 0)
            self.metrics.observe_phases(PHASES)
            if tick % 5 == 0:
                self.metrics.observe_events([_Event("LearningRateChanged"), _Event("PhaseChanged")])
            if tick % 10 == 0:
                self.metrics.observe_error("api")

    def __enter__(self) -> BusyOperator:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


@pytest.fixture
def operator_metrics():
    metrics = OperatorMetrics()
    host, port = start_metrics_server(0, addr="127.0.0.1", metrics=metrics)
    return metrics, f"{host}:{port}"


def test_prometheus_scrapes_the_operator_and_the_dashboard_queries_answer(
    prometheus, operator_metrics
):
    metrics, address = operator_metrics
    url = prometheus({"marco-operator": [address]})
    with BusyOperator(metrics):
        up = wait_for_series(url, 'up{job="marco-operator"} == 1')
        assert up, f"operator target not up: {targets_of(url)}"
        (target,) = [t for t in targets_of(url) if t["labels"]["job"] == "marco-operator"]
        assert target["health"] == "up" and target["scrapeUrl"].endswith("/metrics")

        # Rates need two scrapes of a moving counter inside the window.
        expressions = [concrete(e, rate_interval="30s") for e in dashboard_queries("operator")]
        assert len(expressions) >= 5
        for expr in expressions:
            result = wait_for_series(url, expr, accept=lambda r: bool(r) and all(_finite(r)))
            assert result, f"dashboard query returned nothing: {expr}"
            assert all(_finite(result)), f"{expr} -> {result}"

    phases = {s["metric"]["phase"]: float(s["value"][1]) for s in query(url, _phase_query())}
    assert phases["Training"] == 2 and phases["Succeeded"] == 1 and phases["Failed"] == 0
    decisions = query(url, "marco_operator_decisions_total")
    assert {s["metric"]["reason"] for s in decisions} == {"LearningRateChanged"}
    errors = query(url, 'marco_operator_reconciles_total{result="error"}')
    assert float(errors[0]["value"][1]) >= 1


def _phase_query() -> str:
    (expr,) = [e for e in dashboard_queries("operator") if "marco_operator_adaptations" in e]
    return expr


def _finite(result: list[dict]) -> list[bool]:
    return [math.isfinite(float(sample["value"][1])) for sample in result]
