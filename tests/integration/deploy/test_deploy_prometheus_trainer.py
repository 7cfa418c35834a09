"""A real Prometheus scrapes a real training run (tiny Whisper, synthesised speech); every
trainer-side query of the Grafana dashboard answers, for the namespace and adaptation the
run's target carries, and the LR-change annotation answers once the directive changes the
learning rate."""

from __future__ import annotations

import math
import subprocess
import time

import torch

from marco_contract.formats import Directive
from marco_operator.dashboard import annotation_queries, concrete, cuda_queries, dashboard_queries
from tests.integration.deploy.chart import CHART
from tests.integration.deploy.conftest import query, rules_of, targets_of, wait_for_series
from tests.tiny_models import TEST_SENTENCES, build_tiny_whisper, write_speech_manifest
from tests.trainer_runs import free_port, trainer_command, trainer_env

ADAPTATION = "scraped-run"
#: The target label a PodMonitor gives every trainer series (static here, as a target label).
NAMESPACE = "asr-team-a"
BASELINE_WER = 58.0  # percent, as the operator passes it


def test_prometheus_scrapes_a_training_run_and_the_dashboard_queries_answer(prometheus, tmp_path):
    manifest = write_speech_manifest(tmp_path / "speech")
    model = build_tiny_whisper(tmp_path / "model", TEST_SENTENCES)
    control = tmp_path / "directive.json"
    control.write_text(Directive(cycle=2, learning_rate=3e-3).model_dump_json())
    port = free_port()
    trainer = subprocess.Popen(
        trainer_command(
            "train", "--model", str(model), "--train-manifest", str(manifest),
            "--validation-manifest", str(manifest), "--output-dir", str(tmp_path / "out"),
            "--control-file", str(control), "--max-steps", "100000", "--eval-every", "2",
            "--eval-samples", "2", "--per-device-batch-size", "2", "--precision", "fp32",
            "--cycle-steps", "100000",  # no cycle boundary (and no wait at one) in this test
            "--metrics-port", str(port), "--metrics-host", "127.0.0.1",
            "--adaptation", ADAPTATION, "--baseline-wer", str(BASELINE_WER),
        ),
        env=trainer_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = prometheus(
            {"marco-trainer": [f"127.0.0.1:{port}"]},
            labels={"marco-trainer": {"namespace": NAMESPACE}},
            rule_files=[CHART / "files" / "prometheus-rules.yaml"],
        )
        up = wait_for_series(url, 'up{job="marco-trainer"} == 1', timeout=120)
        assert up, f"trainer target not up: {targets_of(url)}"
        cuda = torch.cuda.is_available()
        chosen = {"adaptation": ADAPTATION, "namespace": NAMESPACE}
        expressions = [concrete(e, **chosen) for e in dashboard_queries("trainer", cuda=cuda)]
        assert len(expressions) >= 15
        for expr in expressions:
            result = wait_for_series(url, expr, accept=_finite_and_present, timeout=120)
            assert _finite_and_present(result), f"dashboard query returned nothing: {expr}"
            assert {s["metric"]["adaptation"] for s in result} == {ADAPTATION}, expr
            assert {s["metric"]["namespace"] for s in result} == {NAMESPACE}, expr
        if not cuda:
            # Steps have been taken (the step-duration query answered): on CPU the GPU
            # memory series are absent, as their HELP says, not 0.
            for expr in cuda_queries():
                assert query(url, concrete(expr, **chosen)) == [], expr

        # The variables' "All" and another namespace's selection.
        assert query(url, concrete(dashboard_queries("trainer")[0]))
        assert query(url, concrete(dashboard_queries("trainer")[0], namespace="elsewhere")) == []

        baseline_query = 'marco_trainer_baseline_wer_ratio{adaptation=~"$adaptation"}'
        (baseline,) = query(url, concrete(baseline_query, adaptation=ADAPTATION))
        assert float(baseline["value"][1]) == BASELINE_WER / 100
        (cycle,) = query(url, concrete('marco_trainer_cycle{adaptation=~"$adaptation"}',
                                       adaptation=ADAPTATION))  # fmt: skip
        assert float(cycle["value"][1]) == 2  # the directive's cycle, as the operator wrote it

        # The chart's alerts evaluate without error on a live trainer's series, and a
        # healthy run fires none of them.
        alerts = wait_for_rules(url, lambda rules: all(map(_evaluated, rules)))
        assert alerts and all(r["health"] == "ok" for r in alerts), alerts
        assert all(r["state"] == "inactive" for r in alerts), alerts
        # The stall timer reads this run's last step: seconds ago, not since the epoch.
        stalled = next(r for r in alerts if r["name"] == "MarcoTrainingStalled")["query"]
        (age,) = query(url, stalled.rsplit(">", 1)[0])
        assert 0 <= float(age["value"][1]) < 60

        # The operator moves to the next cycle at another LR: the annotation marks it.
        control.write_text(Directive(cycle=3, learning_rate=1e-3).model_dump_json())
        assert wait_for_series(url, 'marco_trainer_learning_rate{job="marco-trainer"} == 0.001')
        for expr in annotation_queries():
            annotated = wait_for_series(url, concrete(expr, **chosen, rate_interval="30s"))
            assert annotated, f"annotation query returned nothing: {expr}"
            assert {s["metric"]["adaptation"] for s in annotated} == {ADAPTATION}
    finally:
        control.write_text(Directive(cycle=3, learning_rate=1e-3, stop=True).model_dump_json())
        try:
            code = trainer.wait(timeout=120)
        finally:
            trainer.kill()
    assert code == 0, trainer.stderr.read()[-2000:]


def wait_for_rules(url: str, accept, timeout: float = 30.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    rules = rules_of(url)
    while time.monotonic() < deadline and not (rules and accept(rules)):
        time.sleep(0.25)
        rules = rules_of(url)
    return rules


def _evaluated(rule: dict) -> bool:
    """Evaluated at least once (Prometheus says year 1 before that)."""
    return not rule.get("lastEvaluation", "0001").startswith("0001")


def _finite_and_present(result) -> bool:
    return bool(result) and all(math.isfinite(float(s["value"][1])) for s in result)
