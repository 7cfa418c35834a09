import json
import re
from pathlib import Path

from marco_contract.formats import Evaluation
from marco_operator.core import Event
from marco_operator.dashboard import (
    ADAPTATIONS_QUERY,
    NAMESPACES_QUERY,
    SELECTOR,
    annotation_queries,
    build_dashboard,
    concrete,
    cuda_queries,
    dashboard_queries,
    render_dashboard,
)
from marco_operator.metrics import OperatorMetrics
from marco_trainer.metrics import TrainerMetrics

ROOT = Path(__file__).resolve().parents[3]
COMMITTED = ROOT / "charts" / "marco-asr" / "dashboards" / "marco-asr.json"
TRAINER_METRICS = {
    "marco_trainer_validation_wer_ratio",
    "marco_trainer_baseline_wer_ratio",
    "marco_trainer_best_validation_wer_ratio",
    "marco_trainer_learning_rate",
    "marco_trainer_cycle",
    "marco_trainer_loss",
    "marco_trainer_samples_total",
    "marco_trainer_tokens_total",
    "marco_trainer_step",
    "marco_trainer_step_duration_seconds_bucket",
    "marco_trainer_evaluation_duration_seconds_sum",
    "marco_trainer_evaluation_duration_seconds_count",
    "marco_trainer_last_step_timestamp_seconds",
    "marco_trainer_last_evaluation_timestamp_seconds",
    "marco_trainer_gpu_memory_allocated_bytes",
    "marco_trainer_gpu_memory_max_allocated_bytes",
    "marco_trainer_nonfinite_steps_total",
    "marco_trainer_rollbacks_total",
    "marco_trainer_skipped_audio_total",
}


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bmarco_[a-z_]+", expr))


def test_committed_dashboard_is_the_generated_one():
    assert COMMITTED.read_text() == render_dashboard(), "run `make chart-dashboard`"


def test_every_trainer_metric_has_a_panel_filtered_by_namespace_and_adaptation():
    trainer = dashboard_queries("trainer")
    assert set().union(*map(metric_names, trainer)) == TRAINER_METRICS
    for expr in [*trainer, *annotation_queries()]:
        for selector in re.findall(r"marco_trainer_[a-z_]+(\{[^}]*\})?", expr):
            assert selector == "{" + SELECTOR + "}", expr


def test_trainer_queries_use_only_series_a_trainer_serves():
    metrics = TrainerMetrics("demo")
    metrics.observe_directive(1e-5, 0)  # the trainer's, once it has resumed
    metrics.observe_step(
        step=1, duration_seconds=0.1, samples=2, tokens=3, loss=1.0, gpu_memory=(1, 2)
    )
    evaluation = Evaluation(step=1, cycle=0, lr=1e-5, wer=30.0, time=1.0)
    metrics.observe_evaluation(evaluation, 30.0, duration_seconds=1.0)
    metrics.observe_baseline(40.0)
    served = {s.name for metric in metrics.registry.collect() for s in metric.samples}
    used = set().union(
        *map(metric_names, [*dashboard_queries("trainer"), *annotation_queries()]),
        metric_names(NAMESPACES_QUERY),
        metric_names(ADAPTATIONS_QUERY),
    )
    assert used <= served, used - served


def test_only_the_gpu_memory_panel_needs_cuda():
    assert set().union(*map(metric_names, cuda_queries())) == {
        "marco_trainer_gpu_memory_allocated_bytes",
        "marco_trainer_gpu_memory_max_allocated_bytes",
    }
    assert set(dashboard_queries(cuda=False)) == set(dashboard_queries()) - set(cuda_queries())


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


def test_namespace_and_adaptation_variables_list_the_trainers():
    variables = {v["name"]: v for v in build_dashboard()["templating"]["list"]}
    assert list(variables) == ["datasource", "namespace", "adaptation"]
    namespace, adaptation = variables["namespace"], variables["adaptation"]
    assert namespace["definition"] == "label_values(marco_trainer_build_info, namespace)"
    # The adaptations of the namespaces chosen.
    assert adaptation["definition"] == (
        'label_values(marco_trainer_build_info{namespace=~"$namespace"}, adaptation)'
    )
    for variable in (namespace, adaptation):
        assert variable["includeAll"] and variable["multi"]
    # "All" namespaces matches series with no namespace label too (a `marco run`).
    assert re.fullmatch(namespace["allValue"], "")
    assert variables["datasource"]["query"] == "prometheus"


def test_lr_changes_are_annotated_from_the_learning_rate_series():
    annotations = build_dashboard()["annotations"]["list"]
    assert annotations[0]["builtIn"] == 1
    (lr,) = [a for a in annotations if a.get("expr")]
    assert lr["expr"].startswith("changes(marco_trainer_learning_rate{")
    assert lr["enable"] and lr["datasource"]["uid"] == "${datasource}"


def test_the_wer_panel_draws_the_baseline_dashed():
    (wer,) = [p for p in build_dashboard()["panels"] if p["title"] == "WER"]
    refs = {t["refId"]: t["expr"] for t in wer["targets"]}
    (override,) = wer["fieldConfig"]["overrides"]
    dashed = override["matcher"]["options"]
    assert refs[dashed].startswith("marco_trainer_baseline_wer_ratio{")
    assert override["properties"][0]["value"]["fill"] == "dash"
    assert wer["fieldConfig"]["defaults"]["unit"] == "percentunit"  # a 0..1 ratio


def test_stall_panels_have_ascending_thresholds():
    stats = [p for p in build_dashboard()["panels"] if p["type"] == "stat"]
    assert {p["title"] for p in stats} == {"Since last step", "Since last evaluation"}
    for panel in stats:
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert steps[0] == {"color": "green", "value": None}
        values = [step["value"] for step in steps[1:]]
        assert values == sorted(values) and steps[-1]["color"] == "red"


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
    for expr in [*dashboard_queries(), *annotation_queries()]:
        assert "$" not in concrete(expr)
    assert concrete('x{adaptation=~"$adaptation"}', adaptation="a|b") == 'x{adaptation=~"a|b"}'


def test_dashboard_is_valid_json_with_a_stable_uid():
    loaded = json.loads(COMMITTED.read_text())
    assert loaded["uid"] == "marco-asr" and loaded["schemaVersion"] >= 36
