"""A real Prometheus scrapes a real training run (tiny Whisper, synthesised speech); every
trainer-side query of the Grafana dashboard answers, for the adaptation the run names."""

from __future__ import annotations

import math
import subprocess

from marco_contract.formats import Directive
from marco_operator.dashboard import concrete, dashboard_queries
from tests.integration.deploy.conftest import targets_of, wait_for_series
from tests.tiny_models import TEST_SENTENCES, build_tiny_whisper, write_speech_manifest
from tests.trainer_runs import free_port, trainer_command, trainer_env

ADAPTATION = "scraped-run"


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
            "--metrics-port", str(port), "--metrics-host", "127.0.0.1",
            "--adaptation", ADAPTATION,
        ),
        env=trainer_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = prometheus({"marco-trainer": [f"127.0.0.1:{port}"]})
        up = wait_for_series(url, 'up{job="marco-trainer"} == 1', timeout=120)
        assert up, f"trainer target not up: {targets_of(url)}"
        expressions = [concrete(e, adaptation=ADAPTATION) for e in dashboard_queries("trainer")]
        assert len(expressions) >= 6
        for expr in expressions:
            result = wait_for_series(url, expr, accept=_finite_and_present, timeout=120)
            assert _finite_and_present(result), f"dashboard query returned nothing: {expr}"
            assert {s["metric"]["adaptation"] for s in result} == {ADAPTATION}
        (cycle,) = wait_for_series(url, concrete('marco_trainer_cycle{adaptation=~"$adaptation"}',
                                                 adaptation=ADAPTATION))  # fmt: skip
        assert float(cycle["value"][1]) == 2  # the directive's cycle, as the operator wrote it
    finally:
        control.write_text(Directive(cycle=2, learning_rate=3e-3, stop=True).model_dump_json())
        try:
            code = trainer.wait(timeout=120)
        finally:
            trainer.kill()
    assert code == 0, trainer.stderr.read()[-2000:]


def _finite_and_present(result) -> bool:
    return bool(result) and all(math.isfinite(float(s["value"][1])) for s in result)
