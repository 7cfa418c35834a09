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
#: Every trainer query filters on both variables. `namespace` is the label the PodMonitor
#: gives each target; its "All" is `.*`, which also matches series without one (a
#: `marco run` scraped by a static config).
SELECTOR = 'namespace=~"$namespace", adaptation=~"$adaptation"'
#: Per adaptation across trainer restarts: a restarted pod is a new `pod`/`instance`.
BY = "namespace, adaptation"
Source = Literal["trainer", "operator"]
Kind = Literal["timeseries", "bargauge", "stat"]

#: Seconds without a step / an evaluation at which the stat panels turn red: the
#: defaults of the chart's alerts (values.yaml `monitoring.rules`; a test keeps them equal).
STALLED_AFTER_SECONDS = 15 * 60
NO_EVALUATION_AFTER_SECONDS = 60 * 60


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str
    dashed: bool = False  # a reference line (the baseline), drawn dashed


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    source: Source
    targets: tuple[Target, ...]
    unit: str = "short"
    width: int = 12
    kind: Kind = "timeseries"
    log_scale: bool = False
    stacked: bool = False
    minimum: float | None = None
    #: (value, color) steps above green; drawn as lines on a time series, as the
    #: background color of a stat.
    thresholds: tuple[tuple[float, str], ...] = ()
    #: Answered only where the trainer runs on a CUDA device (absent on CPU).
    needs_cuda: bool = False


@dataclass(frozen=True)
class Annotation:
    name: str
    expr: str
    title: str
    text: str
    color: str


def _trainer(metric: str, legend: str = "{{adaptation}}", dashed: bool = False) -> Target:
    return Target(f"{metric}{{{SELECTOR}}}", legend, dashed)


def _rate(counter: str) -> Target:
    return Target(
        f"sum by ({BY}) (rate({counter}{{{SELECTOR}}}[$__rate_interval]))", "{{adaptation}}"
    )


def _since(metric: str) -> Target:
    return Target(f"time() - {metric}{{{SELECTOR}}}", "{{adaptation}}")


PANELS: tuple[Panel, ...] = (
    Panel(
        "WER",
        "Validation word error rate of each evaluation during training, per adaptation; "
        "dashed: the pre-trained model's WER (the baseline stage) to beat.",
        "trainer",
        (
            _trainer("marco_trainer_validation_wer_ratio"),
            _trainer("marco_trainer_baseline_wer_ratio", "{{adaptation}} baseline", dashed=True),
        ),
        unit="percentunit",
        minimum=0,
    ),
    Panel(
        "Best WER",
        "Lowest validation WER reached so far: the checkpoint early stopping keeps.",
        "trainer",
        (_trainer("marco_trainer_best_validation_wer_ratio"),),
        unit="percentunit",
        minimum=0,
    ),
    Panel(
        "Learning rate",
        "Learning rate in force, as steered by the operator (Eq. 1 cycles / Eq. 2).",
        "trainer",
        (_trainer("marco_trainer_learning_rate"),),
        unit="sci",
        width=8,
        log_scale=True,
    ),
    Panel(
        "Cycle",
        "Learning-rate cycle j the trainer is in.",
        "trainer",
        (_trainer("marco_trainer_cycle"),),
        width=8,
    ),
    Panel(
        "Step",
        "Optimizer step of rank 0.",
        "trainer",
        (_trainer("marco_trainer_step"),),
        width=8,
    ),
    Panel(
        "Training loss",
        "Training loss of the last finite step.",
        "trainer",
        (_trainer("marco_trainer_loss"),),
    ),
    Panel(
        "Samples per second",
        "Training utterances per second, all ranks together (rate of samples_total).",
        "trainer",
        (_rate("marco_trainer_samples_total"),),
        unit="ops",
        width=6,
    ),
    Panel(
        "Tokens per second",
        "Target tokens per second, all ranks together (rate of tokens_total).",
        "trainer",
        (_rate("marco_trainer_tokens_total"),),
        unit="ops",
        width=6,
    ),
    Panel(
        "Step duration (p50, p95)",
        "Quantiles of one optimizer step's wall time on rank 0.",
        "trainer",
        tuple(
            Target(
                f"histogram_quantile({q}, sum by ({BY}, le) (rate("
                f"marco_trainer_step_duration_seconds_bucket{{{SELECTOR}}}[$__rate_interval])))",
                f"{{{{adaptation}}}} p{round(q * 100)}",
            )
            for q in (0.5, 0.95)
        ),
        unit="s",
        width=8,
    ),
    Panel(
        "Evaluation duration (mean)",
        "Mean wall time of a validation evaluation since the trainer started.",
        "trainer",
        (
            Target(
                f"sum by ({BY}) (marco_trainer_evaluation_duration_seconds_sum{{{SELECTOR}}}) / "
                f"sum by ({BY}) (marco_trainer_evaluation_duration_seconds_count{{{SELECTOR}}} "
                "> 0)",
                "{{adaptation}}",
            ),
        ),
        unit="s",
        width=8,
    ),
    Panel(
        "Since last step",
        "Seconds since rank 0's last optimizer step; red where the TrainingStalled alert "
        "fires with the chart's default threshold.",
        "trainer",
        (_since("marco_trainer_last_step_timestamp_seconds"),),
        unit="s",
        width=4,
        kind="stat",
        thresholds=((STALLED_AFTER_SECONDS / 2, "orange"), (STALLED_AFTER_SECONDS, "red")),
    ),
    Panel(
        "Since last evaluation",
        "Seconds since the last validation evaluation; red where the NoEvaluation alert "
        "fires with the chart's default threshold.",
        "trainer",
        (_since("marco_trainer_last_evaluation_timestamp_seconds"),),
        unit="s",
        width=4,
        kind="stat",
        thresholds=(
            (NO_EVALUATION_AFTER_SECONDS / 2, "orange"),
            (NO_EVALUATION_AFTER_SECONDS, "red"),
        ),
    ),
    Panel(
        "GPU memory (rank 0)",
        "Device memory held by tensors on rank 0's GPU, now and at its peak "
        "(torch.cuda.memory_allocated / max_memory_allocated); empty on CPU.",
        "trainer",
        (
            _trainer("marco_trainer_gpu_memory_allocated_bytes", "{{adaptation}} allocated"),
            _trainer("marco_trainer_gpu_memory_max_allocated_bytes", "{{adaptation}} peak"),
        ),
        unit="bytes",
        minimum=0,
        needs_cuda=True,
    ),
    Panel(
        "Skipped steps, rollbacks, unreadable audio",
        "Over the dashboard's range: non-finite steps skipped, rollbacks to the best "
        "checkpoint, training utterances skipped as unreadable.",
        "trainer",
        tuple(
            Target(
                f"sum by ({BY}) (increase(marco_trainer_{name}_total{{{SELECTOR}}}[$__range]))",
                f"{{{{adaptation}}}} {legend}",
            )
            for name, legend in (
                ("nonfinite_steps", "non-finite steps"),
                ("rollbacks", "rollbacks"),
                ("skipped_audio", "unreadable audio"),
            )
        ),
        kind="bargauge",
    ),
    Panel(
        "Adaptations by phase",
        "How many AsrAdaptations the operator sees in each phase (operator-wide: every "
        "namespace it watches).",
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

ANNOTATIONS: tuple[Annotation, ...] = (
    Annotation(
        "LR changes",
        # A step where the learning rate differs from the scrape before: the operator's
        # directive reached the trainer (a new cycle, or Eq. 2's next rate).
        f"changes(marco_trainer_learning_rate{{{SELECTOR}}}[$__rate_interval]) > 0",
        "Learning rate changed",
        "{{adaptation}}",
        "purple",
    ),
)


def dashboard_queries(source: Source | None = None, *, cuda: bool = True) -> list[str]:
    """Every PromQL expression of the panels (of one side if `source` is given; without
    the CUDA-only panels when `cuda` is False)."""
    return [
        target.expr
        for panel in PANELS
        if (source is None or panel.source == source) and (cuda or not panel.needs_cuda)
        for target in panel.targets
    ]


def cuda_queries() -> list[str]:
    """The queries that only a trainer on a CUDA device answers."""
    return [t.expr for panel in PANELS if panel.needs_cuda for t in panel.targets]


def annotation_queries() -> list[str]:
    return [annotation.expr for annotation in ANNOTATIONS]


def concrete(
    expr: str,
    adaptation: str = ".+",
    rate_interval: str = "1m",
    range_: str = "5m",
    namespace: str = ".*",
) -> str:
    """The expression as Grafana sends it, with the dashboard's variables filled in."""
    return (
        expr.replace("$adaptation", adaptation)
        .replace("$namespace", namespace)
        .replace("$__rate_interval", rate_interval)
        .replace("$__range", range_)
    )


def _thresholds(panel: Panel) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    steps += [{"color": color, "value": value} for value, color in panel.thresholds]
    return {"mode": "absolute", "steps": steps}


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    custom: dict[str, Any] = {}
    options: dict[str, Any] = {"legend": {"displayMode": "list", "placement": "bottom"}}
    overrides: list[dict[str, Any]] = []
    if panel.kind == "timeseries":
        custom = {"drawStyle": "line", "lineWidth": 2, "showPoints": "auto"}
        if panel.log_scale:
            custom["scaleDistribution"] = {"type": "log", "log": 10}
        if panel.stacked:
            custom["stacking"] = {"mode": "normal", "group": "A"}
        if panel.thresholds:
            custom["thresholdsStyle"] = {"mode": "line"}
        options["tooltip"] = {"mode": "multi", "sort": "desc"}
        overrides = [
            {
                "matcher": {"id": "byFrameRefID", "options": _ref(i)},
                "properties": [
                    {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}}
                ],
            }
            for i, target in enumerate(panel.targets)
            if target.dashed
        ]
    elif panel.kind == "stat":
        options = {
            "colorMode": "background",
            "graphMode": "none",
            "textMode": "value_and_name",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        }
    else:
        options = {
            "orientation": "horizontal",
            "displayMode": "gradient",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        }
    defaults: dict[str, Any] = {"unit": panel.unit, "custom": custom}
    if panel.minimum is not None:
        defaults["min"] = panel.minimum
    if panel.thresholds:
        defaults["thresholds"] = _thresholds(panel)
        if panel.kind == "stat":
            defaults["color"] = {"mode": "thresholds"}
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": overrides},
        "options": options,
        "targets": [
            {
                "refId": _ref(i),
                "datasource": DATASOURCE,
                "expr": target.expr,
                "legendFormat": target.legend,
                **({"instant": True, "range": False} if panel.kind == "bargauge" else {}),
            }
            for i, target in enumerate(panel.targets)
        ],
    }


def _ref(index: int) -> str:
    return chr(ord("A") + index)


def _annotation_json(annotation: Annotation) -> dict[str, Any]:
    return {
        "name": annotation.name,
        "datasource": DATASOURCE,
        "enable": True,
        "hide": False,
        "iconColor": annotation.color,
        "expr": annotation.expr,
        "titleFormat": annotation.title,
        "textFormat": annotation.text,
        "tagKeys": "namespace,adaptation",
        "useValueForTime": False,
        "step": "1m",
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


#: Every trainer serves build_info from its start: the variables list adaptations as soon
#: as their trainer is scraped, before any evaluation.
NAMESPACES_QUERY = "label_values(marco_trainer_build_info, namespace)"
ADAPTATIONS_QUERY = 'label_values(marco_trainer_build_info{namespace=~"$namespace"}, adaptation)'
#: Grafana's own annotations and alerts, which a dashboard lists first.
BUILT_IN_ANNOTATION: dict[str, Any] = {
    "builtIn": 1,
    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
    "enable": True,
    "hide": True,
    "iconColor": "rgba(0, 211, 255, 1)",
    "name": "Annotations & Alerts",
    "type": "dashboard",
}


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
                    "name": "namespace",
                    "label": "Namespace",
                    "type": "query",
                    "datasource": DATASOURCE,
                    "query": {"query": NAMESPACES_QUERY, "refId": "namespace"},
                    "definition": NAMESPACES_QUERY,
                    "multi": True,
                    "includeAll": True,
                    # Also the series without a namespace label (a `marco run`).
                    "allValue": ".*",
                    "current": {},
                    "refresh": 2,
                    "sort": 1,
                    "hide": 0,
                },
                {
                    "name": "adaptation",
                    "label": "Adaptation",
                    "type": "query",
                    "datasource": DATASOURCE,
                    "query": {"query": ADAPTATIONS_QUERY, "refId": "adaptation"},
                    "definition": ADAPTATIONS_QUERY,
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
        "annotations": {"list": [BUILT_IN_ANNOTATION, *map(_annotation_json, ANNOTATIONS)]},
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
