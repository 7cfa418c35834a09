"""The operator's directive under torchrun: a new LR at the next step on every rank, then stop.

Also scrapes rank 0's endpoints mid-run: /metrics through prometheus_client's
parser, /v1/evaluations through the EvaluationHistory model.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from marco_contract.formats import Directive, EvaluationHistory, StageResult
from tests.trainer_runs import (
    free_port,
    read_history,
    read_trace,
    train_args,
    trainer_command,
    trainer_env,
)

pytestmark = pytest.mark.slow

START_LR = 1e-3
NEW_LR = 2.5e-4


def write_directive(path, directive: Directive) -> tuple[float, float]:
    """Atomically, like a ConfigMap update; returns the times just before and after."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(directive.model_dump_json())
    before = time.time()
    os.replace(tmp, path)
    return before, time.time()


def wait_for(condition, timeout: float, what: str, process: subprocess.Popen):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process.poll() is not None:
            _, err = process.communicate()
            raise AssertionError(
                f"trainer exited ({process.returncode}) before {what}: {err[-3000:]}"
            )
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def test_directive_changes_lr_on_every_rank_then_stop_exports(
    tmp_path, tiny_whisper, speech_manifest
):
    out, control = tmp_path / "run", tmp_path / "directive.json"
    port = free_port()
    args = train_args(
        tiny_whisper,
        speech_manifest,
        out,
        learning_rate=START_LR,
        max_steps=5000,
        eval_every=6,
        max_new_tokens=4,
        control_file=control,
        metrics_port=port,
        metrics_host="127.0.0.1",
        adaptation="call-center",
    )
    process = subprocess.Popen(
        trainer_command(*args, nproc=2),
        env=trainer_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: len(read_trace(out, 0)) >= 3, 120, "step 3", process)
        replacing, written = write_directive(control, Directive(cycle=1, learning_rate=NEW_LR))

        def switched():
            traces = [read_trace(out, r) for r in (0, 1)]
            return all(any(t["lr"] == NEW_LR for t in trace) for trace in traces) and traces

        traces = wait_for(switched, 60, "the new learning rate", process)
        # An evaluation inside the new cycle, so the history shows its LR and cycle.
        wait_for(
            lambda: (
                any(e.cycle == 1 for e in read_history(out).evaluations)
                if (out / "evaluations.json").exists()
                else False
            ),
            60,
            "an evaluation in cycle 1",
            process,
        )

        families = {
            f.name: f
            for f in text_string_to_metric_families(
                get(f"http://127.0.0.1:{port}/metrics").decode()
            )
        }
        labels = {"adaptation": "call-center"}

        def value(name: str) -> float:
            (sample,) = [s for s in families[name].samples if s.labels == labels]
            return sample.value

        assert value("marco_trainer_learning_rate") == NEW_LR
        assert value("marco_trainer_cycle") == 1
        assert value("marco_trainer_step") >= 6
        assert value("marco_trainer_evaluations") >= 1
        assert 0 <= value("marco_trainer_validation_wer_ratio") <= 2
        assert value("marco_trainer_best_validation_wer_ratio") >= 0
        assert value("marco_trainer_samples") > 0 and value("marco_trainer_tokens") > 0
        assert value("marco_trainer_steps") >= 6
        (timed,) = [
            s.value
            for s in families["marco_trainer_step_duration_seconds"].samples
            if s.name.endswith("_count")
        ]
        # Each step timed once; a scrape may land between one step's two updates.
        assert 0 <= value("marco_trainer_steps") - timed <= 1
        for name in ("loss", "nonfinite_steps", "rollbacks"):
            assert f"marco_trainer_{name}" in families

        served = EvaluationHistory.model_validate_json(
            get(f"http://127.0.0.1:{port}/v1/evaluations")
        )
        assert served.adaptation == "call-center"
        assert served.directive is not None and served.directive.learning_rate == NEW_LR
        assert served.evaluations and not served.finished
        assert {(e.cycle, e.lr) for e in served.evaluations} <= {(0, START_LR), (1, NEW_LR)}
        assert (1, NEW_LR) in {(e.cycle, e.lr) for e in served.evaluations}

        write_directive(control, Directive(cycle=1, learning_rate=NEW_LR, stop=True))
        process.wait(timeout=120)
        stderr = process.stderr.read()
        assert process.returncode == 0, stderr[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    # The switch: rank 0's first step that polled after the write has the new LR,
    # every earlier one the old; the other rank switched at the very same step.
    traces = [read_trace(out, r) for r in (0, 1)]
    rank0 = traces[0]
    switch = next(t["step"] for t in rank0 if t["lr"] == NEW_LR)
    assert all(t["lr"] == START_LR for t in rank0 if t["step"] < switch)
    assert all(t["lr"] == NEW_LR for t in rank0 if t["step"] >= switch)
    before = next(t for t in rank0 if t["step"] == switch - 1)
    at = next(t for t in rank0 if t["step"] == switch)
    # The step before began reading the directive before the file changed, the
    # switching step finished reading it after: the very next step switched.
    assert before["polled"] < written and at["polled_until"] > replacing
    for trace in traces[1:]:
        assert next(t["step"] for t in trace if t["lr"] == NEW_LR) == switch
        assert all((t["lr"] == NEW_LR) == (t["step"] >= switch) for t in trace)

    # Stop: exit 0, best checkpoint exported, finished history, a result for the operator.
    result = StageResult.model_validate_json((out / "result.json").read_text())
    assert result.ok and result.stage == "train" and result.message == "stopped by directive"
    assert result.steps == rank0[-1]["step"] < 5000
    history = read_history(out)
    assert history.finished and history.directive.stop
    assert (out / "export" / "config.json").exists() and (out / "export" / "README.md").exists()
    best = json.loads((out / "checkpoints" / "best" / "best.json").read_text())
    assert best["step"] == result.best_step and best["wer"] == pytest.approx(result.wer, abs=1e-3)
