import tomllib
from dataclasses import dataclass

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from marco_operator.core import Event
from marco_operator.metrics import PHASES, OperatorMetrics, metrics_port
from tests.tools import ROOT


def families(metrics: OperatorMetrics) -> dict:
    text = generate_latest(metrics.registry).decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def sample(metrics: OperatorMetrics, name: str, **labels) -> float:
    for family in families(metrics).values():
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    raise KeyError(f"{name}{labels} not exposed")


def test_names_and_types_follow_prometheus_conventions():
    found = families(OperatorMetrics())
    assert found["marco_operator_reconciles"].type == "counter"
    assert found["marco_operator_reconcile_duration_seconds"].type == "histogram"
    assert found["marco_operator_adaptations"].type == "gauge"
    assert found["marco_operator_decisions"].type == "counter"
    assert found["marco_operator_errors"].type == "counter"


def test_build_info_carries_the_package_version():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    metrics = OperatorMetrics()
    assert families(metrics)["marco_operator_build_info"].type == "gauge"
    assert sample(metrics, "marco_operator_build_info", version=version) == 1


def test_each_instance_has_its_own_registry():
    a, b = OperatorMetrics(), OperatorMetrics()
    a.observe_reconcile(0.1, ok=True)
    assert sample(a, "marco_operator_reconciles_total", result="success") == 1
    assert sample(b, "marco_operator_reconciles_total", result="success") == 0


def test_reconciles_count_by_result_and_time_into_buckets():
    metrics = OperatorMetrics()
    for duration, ok in ((0.003, True), (0.2, True), (4.0, False)):
        metrics.observe_reconcile(duration, ok)
    assert sample(metrics, "marco_operator_reconciles_total", result="success") == 2
    assert sample(metrics, "marco_operator_reconciles_total", result="error") == 1
    name = "marco_operator_reconcile_duration_seconds"
    assert sample(metrics, f"{name}_count") == 3
    assert sample(metrics, f"{name}_sum") == pytest.approx(4.203)
    assert sample(metrics, f"{name}_bucket", le="0.005") == 1
    assert sample(metrics, f"{name}_bucket", le="0.25") == 2
    assert sample(metrics, f"{name}_bucket", le="+Inf") == 3
    with pytest.raises(ValueError, match="duration"):
        metrics.observe_reconcile(-1, ok=True)


def test_phase_gauge_counts_adaptations_and_empties_stale_phases():
    metrics = OperatorMetrics()
    metrics.observe_phases({"a": "Training", "b": "Training", "c": "Baseline"})
    assert sample(metrics, "marco_operator_adaptations", phase="Training") == 2
    assert sample(metrics, "marco_operator_adaptations", phase="Baseline") == 1
    metrics.observe_phases({"a": "Succeeded"})
    assert sample(metrics, "marco_operator_adaptations", phase="Training") == 0
    assert sample(metrics, "marco_operator_adaptations", phase="Succeeded") == 1
    exposed = {s.labels["phase"] for s in families(metrics)["marco_operator_adaptations"].samples}
    assert exposed == set(PHASES)
    with pytest.raises(ValueError, match="'d' has unknown phase 'Dancing'"):
        metrics.observe_phases({"d": "Dancing"})


def test_only_decision_events_are_counted_by_reason():
    metrics = OperatorMetrics()
    events = [
        Event("Normal", "PhaseChanged", "Pending → Profiling"),
        Event("Normal", "LearningRateSet", "cycle 0"),
        Event("Normal", "LearningRateChanged", "cycle 1"),
        Event("Normal", "LearningRateChanged", "cycle 2"),
        Event("Normal", "EarlyStop", "no improvement"),
        Event("Warning", "StopNotHonoured", "suspending"),
    ]
    assert metrics.observe_events(events) == 5
    assert sample(metrics, "marco_operator_decisions_total", reason="LearningRateChanged") == 2
    assert sample(metrics, "marco_operator_decisions_total", reason="StopNotHonoured") == 1
    with pytest.raises(KeyError):
        sample(metrics, "marco_operator_decisions_total", reason="PhaseChanged")


def test_any_object_with_a_reason_is_an_event():
    @dataclass
    class K8sEvent:
        reason: str

    metrics = OperatorMetrics()
    metrics.observe_events([K8sEvent("EarlyStop")])
    assert sample(metrics, "marco_operator_decisions_total", reason="EarlyStop") == 1


def test_errors_count_by_kind():
    metrics = OperatorMetrics()
    metrics.observe_error("api")
    metrics.observe_error("api")
    metrics.observe_error("trainer")
    assert sample(metrics, "marco_operator_errors_total", kind="api") == 2
    assert sample(metrics, "marco_operator_errors_total", kind="trainer") == 1


def test_metrics_port_from_the_environment(monkeypatch):
    monkeypatch.delenv("MARCO_METRICS_PORT", raising=False)
    assert metrics_port() == 9090
    monkeypatch.setenv("MARCO_METRICS_PORT", "9191")
    assert metrics_port() == 9191
    monkeypatch.setenv("MARCO_METRICS_PORT", "nine")
    with pytest.raises(ValueError, match="MARCO_METRICS_PORT='nine'"):
        metrics_port()
