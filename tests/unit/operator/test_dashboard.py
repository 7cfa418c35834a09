import json
import re
from pathlib import Path

from marco_operator.core import Event
from marco_operator.dashboard import (
    build_dashboard,
    concrete,
    dashboard_queries,
    render_dashboard,
)
from marco_operator.metrics import OperatorMetrics

ROOT = Path(__file__).resolve().parents[3]
COMMITTED = ROOT / "charts" / "marco-asr" / "dashboards" / "marco-asr.json"
TRAINER_METRICS = {
    "marco_trainer_wer",
    "marco_trainer_best_wer",
    "marco_trainer_learning_rate",
    "marco_trainer_cycle",
    "marco_trainer_loss",
    "marco_trainer_samples_per_second",
    "marco_trainer_step",
}


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bmarco_[a-z_]+", expr))


def test_committed_dashboard_is_the_generated_one():
    assert COMMITTED.read_text() == render_dashboard(), "run `make chart-dashboard`"


def test_every_trainer_metric_has_a_panel_filtered_by_adaptation():
    trainer = dashboard_queries("trainer")
    assert set().union(*map(metric_names, trainer)) == TRAINER_METRICS
    assert all('adaptation=~"$adaptation"' in expr for expr in trainer)


def test_operator_queries_use_only_metrics_the_operator_exports():
    metrics = OperatorMetrics()
    # Labelled counters expose a series once a label value has been seen.
    metrics.observe_error("api")
    metrics.observe_events([Event("Normal", "EarlyStop", "stop")])
    exported = set()
    for metric in metrics.registry.collect():
        exported |= {s.name for s in metric.samples}
    used = set().union(*map(metric_names, dashboard_queries("operator")))
    assert used and used <= exported, used - exported


def test_queries_are_the_panels_targets():
    dashboard = build_dashboard()
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs == dashboard_queries()
    # Grafana keys a panel's queries by refId, and each must query the chosen datasource.
    for panel in dashboard["panels"]:
        targets = panel.get("targets", [])
        assert len({t["refId"] for t in targets}) == len(targets), panel["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in targets), panel["title"]


def test_adaptation_variable_lists_the_trainers_adaptations():
    variables = {v["name"]: v for v in build_dashboard()["templating"]["list"]}
    adaptation = variables["adaptation"]
    assert adaptation["definition"] == "label_values(marco_trainer_wer, adaptation)"
    assert adaptation["includeAll"] and adaptation["multi"]
    assert variables["datasource"]["query"] == "prometheus"


def test_panels_do_not_overlap_and_fit_the_grid():
    cells = set()
    for panel in build_dashboard()["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, panel["title"]
                cells.add((x, y))
    ids = [p["id"] for p in build_dashboard()["panels"]]
    assert len(ids) == len(set(ids))


def test_concrete_fills_every_grafana_variable():
    for expr in dashboard_queries():
        assert "$" not in concrete(expr)
    assert concrete('x{adaptation=~"$adaptation"}', adaptation="a|b") == 'x{adaptation=~"a|b"}'


def test_dashboard_is_valid_json_with_a_stable_uid():
    loaded = json.loads(COMMITTED.read_text())
    assert loaded["uid"] == "marco-asr" and loaded["schemaVersion"] >= 36
