"""`marco run` end to end: every stage as a real trainer subprocess, on a tiny random
Whisper and a few synthesised utterances, steered by the same core as the operator."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from marco_contract.formats import EvaluationHistory
from marco_contract.status import AsrAdaptationStatus
from tests.tools import checkout_env
from tests.trainer_runs import free_port

ROOT = Path(__file__).resolve().parents[2]

# The data comes from `python -m marco_demo data`: TTS voices and a sox phone line.
pytestmark = [pytest.mark.timeout(900), pytest.mark.tts, pytest.mark.sox]


def tiny_manifest() -> dict:
    """The demo's manifest, shrunk: a tiny model and a few dozen steps."""
    manifest = yaml.safe_load((ROOT / "examples" / "demo-local.yaml").read_text())
    manifest["metadata"]["name"] = "e2e"
    spec = manifest["spec"]
    spec["model"]["source"] = "/data/models/tiny"
    spec["baseline"]["samples"] = 3
    spec["augmentation"]["copies"] = 1
    spec["training"] = {
        "learningRate": {"min": 1e-4, "max": 3e-3},
        "cycleSteps": 4,
        "evalEvery": 2,
        "evalSamples": 3,
        "perDeviceBatchSize": 2,
        "gradientAccumulation": 1,
        "maxSteps": 16,
        # No early stop: the LR sequence is then a function of the history alone.
        "earlyStopping": {"patience": 100, "minImprovement": 0.0},
        "precision": "fp32",
    }
    # Three short LR trials choose cycle 0's LR: 3 log-spaced in [1e-4, 3e-3].
    spec["trials"] = {"enabled": True, "count": 3, "steps": 4, "evalEvery": 2}
    return manifest


def marco_run_argv(manifest: dict, data_dir: Path, tmp_path: Path) -> list[str]:
    """The `marco run` command line of a manifest, written under tmp_path."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    manifest_path = tmp_path / "e2e.yaml"
    manifest_path.write_text(yaml.safe_dump(manifest))
    return [sys.executable, "-m", "marco_operator", "run", "-f", str(manifest_path),
            "--data-dir", str(data_dir), "--output-dir", str(tmp_path / "out"),
            "--interval", "0.5", "--metrics-port", str(free_port())]  # fmt: skip


def run_marco(manifest: dict, data_dir: Path, tmp_path: Path) -> tuple[Path, str]:
    """`marco run` on a manifest; the run's folder and its output (checked to succeed)."""
    argv = marco_run_argv(manifest, data_dir, tmp_path)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=800, env=checkout_env())
    out = tmp_path / "out"
    run_dir = out / "marco-asr" / manifest["metadata"]["name"]
    logs = "".join(p.read_text()[-1500:] for p in (run_dir / "logs").glob("*.log"))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:] + logs
    return run_dir, done.stdout + done.stderr


def test_marco_run_goes_through_every_stage_and_steers_like_the_operator(data_dir, tmp_path):
    run_dir, output = run_marco(tiny_manifest(), data_dir, tmp_path)

    status = AsrAdaptationStatus.model_validate_json((run_dir / "status.json").read_text())
    assert status.phase == "Succeeded"
    ran = ("filter", "profile", "augment", "baseline", "trials", "train", "evaluate")
    assert {name: s.state for name, s in status.stages.items()} == {
        **{stage: "Succeeded" for stage in ran},
        # Nothing remote: the model is a folder, no data source, no push.
        **{stage: "Skipped" for stage in ("fetch", "push")},
    }
    assert status.baseline_wer is not None and status.final_wer is not None
    assert status.baseline_test_wer is not None  # the pre-trained model on the test set
    assert (run_dir / "train" / "export" / "config.json").exists()
    assert list((run_dir / "augment").glob("manifest-*.jsonl"))
    assert (run_dir / "report" / "report.md").exists()
    assert (run_dir / "report" / "curves.png").stat().st_size > 10_000
    assert (run_dir / "report" / "trials.png").stat().st_size > 10_000
    report = (run_dir / "report" / "report.md").read_text()
    assert "## Profile match (augmented vs target)" in report
    assert len(list((run_dir / "report" / "match").glob("match-*.png"))) == 4
    assert "final WER" in output

    # The LR trials: 1e-4, √(1e-4 · 3e-3) = 5.477e-4 (rounded to 5.48e-4), 3e-3, each a
    # real trainer run at one fixed LR whose curve the status carries; the lowest best
    # WER (ties: the smaller LR) sets cycle 0.
    assert [t.learning_rate for t in status.trials] == [1e-4, 5.48e-4, 3e-3]
    for trial in status.trials:
        assert trial.state == "Succeeded", trial.message
        trial_dir = run_dir / "trials" / f"lr-{trial.index}"
        history = EvaluationHistory.model_validate_json(
            (trial_dir / "evaluations.json").read_text()
        ).evaluations
        # The stage result rounds WERs to 4 decimals (the termination message is small).
        assert [(p.step, p.wer) for p in trial.curve] == [
            (e.step, pytest.approx(e.wer, abs=5e-5)) for e in history
        ]
        assert [e.step for e in history] == [2, 4]
        assert {e.lr for e in history} == {trial.learning_rate}  # nothing steered it
        assert trial.best_wer == pytest.approx(min(e.wer for e in history), abs=5e-5)
        assert not (trial_dir / "export").exists()
    chosen = min(status.trials, key=lambda t: (min(p.wer for p in t.curve), t.learning_rate))
    assert [t.chosen for t in status.trials] == [t is chosen for t in status.trials]
    assert status.cycles[0].learning_rate == chosen.learning_rate
    assert status.cycles[0].reason == "LR trials: best of 3"

    # Eq. 1 written out, not the operator's schedule: cycle 0 runs at the trials' LR;
    # cycle j+1 at
    # η_max − (η_max − η_min)·clip(σ/σ_ref, 0, 1), σ the population s.d. of the first
    # cycleSteps/evalEvery = 2 evaluations of cycle j, σ_ref 0.5 (the API's default).
    history = EvaluationHistory.model_validate_json(
        (run_dir / "train" / "evaluations.json").read_text()
    ).evaluations
    assert len(history) >= 6
    lr_min, lr_max, sigma_ref = 1e-4, 3e-3, 0.5
    expected = [chosen.learning_rate]
    for record in status.cycles[:-1]:
        window = [e.wer for e in sorted(history, key=lambda e: e.step)
                  if e.cycle == record.cycle][:2]  # fmt: skip
        assert len(window) == 2, (record.cycle, window)
        mean = sum(window) / 2
        sigma = math.sqrt(sum((w - mean) ** 2 for w in window) / 2)
        expected.append(lr_max - (lr_max - lr_min) * min(1.0, sigma / sigma_ref))
    assert [c.learning_rate for c in status.cycles] == pytest.approx(expected)
    assert len(status.cycles) >= 3
    # And the trainer really ran each cycle at the LR the directive gave it.
    for record in status.cycles:
        lrs = {e.lr for e in history if e.cycle == record.cycle}
        assert all(lr == pytest.approx(record.learning_rate) for lr in lrs), (record.cycle, lrs)
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert sum(e["reason"] == "LearningRateChanged" for e in events) == len(status.cycles) - 1


def test_the_same_manifest_makes_the_same_trial_choice(data_dir, tmp_path):
    """Same manifest, same seed: the trials measure the same curves and choose alike."""
    manifest = tiny_manifest()
    manifest["metadata"]["name"] = "trials-only"
    spec = manifest["spec"]
    for section in ("filter", "profile", "augmentation", "baseline", "evaluation"):
        spec[section] = {"enabled": False}
    spec["training"]["maxSteps"] = 2  # the trials are under test, not the training
    # Two trials, the least the API allows: a choice between two repeats as well as one
    # among three, and each trial is a trainer process (about a minute of this test's four).
    spec["trials"]["count"] = 2
    statuses = []
    for attempt in ("first", "second"):
        run_dir, _ = run_marco(manifest, data_dir, tmp_path / attempt)
        statuses.append(
            AsrAdaptationStatus.model_validate_json((run_dir / "status.json").read_text())
        )
    first, second = statuses
    assert len(first.trials) == 2
    assert all(t.state == "Succeeded" and len(t.curve) == 2 for t in first.trials)
    assert [t.model_dump(exclude={"job_name"}) for t in first.trials] == [
        t.model_dump(exclude={"job_name"}) for t in second.trials
    ]
    assert first.cycles[0].learning_rate == second.cycles[0].learning_rate


def test_a_rerun_after_the_driver_was_killed_mid_training_resumes_with_one_trainer(
    data_dir, tmp_path
):
    """Issue 13: SIGKILL leaves the trainer running; the rerun stops it (SIGTERM: it saves
    its `last` checkpoint) before it starts the train stage again, which resumes there."""
    manifest = tiny_manifest()
    manifest["metadata"]["name"] = "orphan"
    spec = manifest["spec"]
    for section in ("filter", "profile", "augmentation", "baseline", "trials", "evaluation"):
        spec[section] = {"enabled": False}
    spec["training"]["initialLearningRate"] = 1e-3
    run_dir = tmp_path / "out" / "marco-asr" / "orphan"
    with (tmp_path / "first.log").open("w") as log:
        first = subprocess.Popen(
            marco_run_argv(manifest, data_dir, tmp_path), stdout=log, stderr=log,
            env=checkout_env(),
        )  # fmt: skip
    # The first evaluation (step 2) saves `last`; at step 4, the end of cycle 0, the
    # trainer waits for the next cycle's directive, which no driver writes any more.
    last = run_dir / "train" / "checkpoints" / "last"
    deadline = time.monotonic() + 600
    while not last.exists():
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint within 600 s"
        time.sleep(0.1)
    first.kill()
    first.wait()

    run_dir, output = run_marco(manifest, data_dir, tmp_path)

    assert "stopping orphan-train (PID " in output
    status = AsrAdaptationStatus.model_validate_json((run_dir / "status.json").read_text())
    assert status.phase == "Succeeded" and status.step == 16
    log = (run_dir / "logs" / "train.log").read_text()  # both trainers', appended
    assert "resumed from" in log and "Address already in use" not in log
    history = EvaluationHistory.model_validate_json(
        (run_dir / "train" / "evaluations.json").read_text()
    ).evaluations
    assert [e.step for e in history] == list(range(2, 17, 2))  # each evaluation once
    assert (run_dir / "train" / "export" / "config.json").exists()
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert [e["reason"] for e in events].count("OrphanStopped") == 1
