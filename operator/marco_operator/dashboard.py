"""`marco dashboard`: the Grafana dashboard, built in code and committed to the chart.

The panels are data (`PANELS`), so the PromQL a user sees in Grafana is the
PromQL tests run against a real Prometheus (`dashboard_queries()`), and the
committed JSON is regenerated and diffed by a test rather than hand-edited.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any, Literal

from marco_operator.generated import add_generator

UID = "marco-asr"
TITLE = "marco-asr: domain adaptation"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
ADAPTATION = 'adaptation=~"$adaptation"'
Source = Literal["trainer", "operator"]


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    source: Source
    targets: tuple[Target, ...]
    unit: str = "short"
    width: int = 12
    kind: str = "timeseries"
    log_scale: bool = False
    stacked: bool = False


def _per_adaptation(metric: str) -> Target:
    return Target(f"{metric}{{{ADAPTATION}}}", "{{adaptation}}")


PANELS: tuple[Panel, ...] = (
    Panel(
        "WER",
        "Word error rate (%) of each evaluation during training, per adaptation.",
        "trainer",
        (_per_adaptation("marco_trainer_wer"),),
        unit="percent",
    ),
    Panel(
        "Best WER",
        "Lowest WER (%) reached so far: the checkpoint early stopping keeps.",
        "trainer",
        (_per_adaptation("marco_trainer_best_wer"),),
        unit="percent",
    ),
    Panel(
        "Learning rate",
        "Learning rate in force, as steered by the operator (Eq. 1 cycles / Eq. 2).",
        "trainer",
        (_per_adaptation("marco_trainer_learning_rate"),),
        unit="sci",
        width=8,
        log_scale=True,
    ),
    Panel(
        "Cycle",
        "Learning-rate cycle j the trainer is in.",
        "trainer",
        (_per_adaptation("marco_trainer_cycle"),),
        width=8,
    ),
    Panel(
        "Step",
        "Optimizer step of rank 0.",
        "trainer",
        (_per_adaptation("marco_trainer_step"),),
        width=8,
    ),
    Panel(
        "Training loss",
        "Training loss of the last logged step.",
        "trainer",
        (_per_adaptation("marco_trainer_loss"),),
    ),
    Panel(
        "Throughput",
        "Training samples per second, all ranks together.",
        "trainer",
        (_per_adaptation("marco_trainer_samples_per_second"),),
        unit="ops",
    ),
    Panel(
        "Adaptations by phase",
        "How many AsrAdaptations the operator sees in each phase.",
        "operator",
        (Target("sum by (phase) (marco_operator_adaptations)", "{{phase}}"),),
        width=8,
        stacked=True,
    ),
    Panel(
        "Reconciles",
        "Reconciles per second, by result.",
        "operator",
        (
            Target(
                "sum by (result) (rate(marco_operator_reconciles_total[$__rate_interval]))",
                "{{result}}",
            ),
        ),
        unit="reqps",
        width=8,
    ),
    Panel(
        "Reconcile duration (p50, p95)",
        "Quantiles of the time one reconcile takes.",
        "operator",
        tuple(
            Target(
                f"histogram_quantile({q}, sum by (le) "
                "(rate(marco_operator_reconcile_duration_seconds_bucket[$__rate_interval])))",
                f"p{round(q * 100)}",
            )
            for q in (0.5, 0.95)
        ),
        unit="s",
        width=8,
    ),
    Panel(
        "Decisions",
        "Learning-rate changes, early stops and suspensions, by Event reason.",
        "operator",
        (
            Target(
                "sum by (reason) (increase(marco_operator_decisions_total[$__range]))",
                "{{reason}}",
            ),
        ),
        kind="bargauge",
    ),
    Panel(
        "Operator errors",
        "Errors per second met while reconciling, by kind.",
        "operator",
        (
            Target(
                "sum by (kind) (rate(marco_operator_errors_total[$__rate_interval]))",
                "{{kind}}",
            ),
        ),
        unit="reqps",
    ),
)


def dashboard_queries(source: Source | None = None) -> list[str]:
    """Every PromQL expression of the dashboard (of one side if `source` is given)."""
    return [
        target.expr
        for panel in PANELS
        if source is None or panel.source == source
        for target in panel.targets
    ]


def concrete(
    expr: str, adaptation: str = ".+", rate_interval: str = "1m", range_: str = "5m"
) -> str:
    """The expression as Grafana sends it, with the dashboard's variables filled in."""
    return (
        expr.replace("$adaptation", adaptation)
        .replace("$__rate_interval", rate_interval)
        .replace("$__range", range_)
    )


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    custom: dict[str, Any] = {}
    options: dict[str, Any] = {"legend": {"displayMode": "list", "placement": "bottom"}}
    if panel.kind == "timeseries":
        custom = {"drawStyle": "line", "lineWidth": 2, "showPoints": "auto"}
        if panel.log_scale:
            custom["scaleDistribution"] = {"type": "log", "log": 10}
        if panel.stacked:
            custom["stacking"] = {"mode": "normal", "group": "A"}
        options["tooltip"] = {"mode": "multi", "sort": "desc"}
    else:
        options = {
            "orientation": "horizontal",
            "displayMode": "gradient",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        }
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit, "custom": custom}, "overrides": []},
        "options": options,
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": DATASOURCE,
                "expr": target.expr,
                "legendFormat": target.legend,
                **({"instant": True, "range": False} if panel.kind == "bargauge" else {}),
            }
            for i, target in enumerate(panel.targets)
        ],
    }


def _row(title: str, panel_id: int, y: int) -> dict[str, Any]:
    return {
        "id": panel_id,
        "type": "row",
        "title": title,
        "collapsed": False,
        "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
        "panels": [],
    }


def _layout() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    y = 0
    for source, title in (("trainer", "Training"), ("operator", "Operator")):
        panels.append(_row(title, len(panels) + 1, y))
        y += 1
        x = 0
        for panel in (p for p in PANELS if p.source == source):
            if x + panel.width > 24:
                x, y = 0, y + 8
            panels.append(_panel_json(panel, len(panels) + 1, x, y))
            x += panel.width
        y += 8
    return panels


def build_dashboard() -> dict[str, Any]:
    return {
        "uid": UID,
        "title": TITLE,
        "description": "WER, learning-rate cycles and operator decisions of marco-asr.",
        "tags": ["marco-asr", "asr", "training"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "browser",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "refresh": 1,
                },
                {
                    "name": "adaptation",
                    "label": "Adaptation",
                    "type": "query",
                    "datasource": DATASOURCE,
                    "query": {
                        "query": "label_values(marco_trainer_wer, adaptation)",
                        "refId": "adaptation",
                    },
                    "definition": "label_values(marco_trainer_wer, adaptation)",
                    "multi": True,
                    "includeAll": True,
                    "allValue": ".+",
                    "current": {},
                    "refresh": 2,
                    "sort": 1,
                    "hide": 0,
                },
            ]
        },
        "annotations": {"list": []},
        "panels": _layout(),
    }


def render_dashboard() -> str:
    return json.dumps(build_dashboard(), indent=2, sort_keys=False) + "\n"


def register(subparsers: argparse._SubParsersAction) -> None:
    add_generator(
        subparsers,
        "dashboard",
        "write the Grafana dashboard JSON",
        render_dashboard,
        "marco-asr.json",
    )
