"""Same manifest, same seed → the same LR sequence and the same evaluations (issue 16).

Two `marco run`s of one tiny manifest, each with its own output directory. The
operator decides each cycle from the evaluation history alone; the trainer waits at
each cycle's boundary for that decision (`training.waitForDirective`, on by
default), so every cycle starts at the same step in both runs and the weights, and
with them every WER, repeat. Without the wait the trainer goes on while the
operator looks (every 0.5 s here), and where the LR changes depends on that timing:
one such run of this manifest started cycles 1, 2 and 3 at steps 6, 10 and 14
instead of 5, 9 and 13. A tiny random model's WER stays near 100 % for most of the
run; the mean training losses, compared bit for bit, are what show the weights
repeat.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from marco_contract.formats import EvaluationHistory
from marco_contract.status import AsrAdaptationStatus
from tests.tools import checkout_env
from tests.trainer_runs import free_port

# The data comes from `python -m marco_demo data`: TTS voices and a sox phone line.
pytestmark = [pytest.mark.timeout(900), pytest.mark.tts, pytest.mark.sox]

CYCLE_STEPS, EVAL_EVERY, MAX_STEPS = 4, 2, 16


def manifest() -> dict:
    """Training only (the other stages do not steer it), on a tiny random Whisper."""
    return {
        "apiVersion": "asr.marco.dev/v1alpha1",
        "kind": "AsrAdaptation",
        "metadata": {"name": "repeat"},
        "spec": {
            "model": {"source": "/data/models/tiny", "family": "encoder-decoder"},
            "data": {"train": ["source/train.jsonl"], "validation": "target/dev.jsonl"},
            "filter": {"enabled": False},
            "profile": {"enabled": False},
            "augmentation": {"enabled": False},
            "baseline": {"enabled": False},
            "evaluation": {"enabled": False},
            "training": {
                # Large steps, so that the random model's WER leaves 100 % within 16 steps.
                "learningRate": {"min": 1e-3, "max": 3e-2},
                "cycleSteps": CYCLE_STEPS,
                "evalEvery": EVAL_EVERY,
                "evalSamples": 3,
                "perDeviceBatchSize": 2,
                "gradientAccumulation": 1,
                "maxSteps": MAX_STEPS,
                # No early stop: a stop is applied when read, not at a boundary.
                "earlyStopping": {"patience": 100, "minImprovement": 0.0},
                "precision": "fp32",
            },
            "resources": {"gpusPerNode": 0},
        },
    }


def marco_run(data_dir: Path, manifest_path: Path, out: Path) -> Path:
    done = subprocess.run(
        [sys.executable, "-m", "marco_operator", "run", "-f", str(manifest_path),
         "--data-dir", str(data_dir), "--output-dir", str(out), "--interval", "0.5",
         "--metrics-port", str(free_port())],
        env=checkout_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    run_dir = out / "marco-asr" / "repeat"
    logs = "".join(p.read_text()[-3000:] for p in (run_dir / "logs").glob("*.log"))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:] + logs
    return run_dir


def test_two_runs_of_one_manifest_repeat_the_lr_sequence_and_every_evaluation(data_dir, tmp_path):
    manifest_path = tmp_path / "repeat.yaml"
    manifest_path.write_text(yaml.safe_dump(manifest()))
    runs = [marco_run(data_dir, manifest_path, tmp_path / f"out-{i}") for i in (1, 2)]

    histories = [
        EvaluationHistory.model_validate_json((r / "train" / "evaluations.json").read_text())
        for r in runs
    ]
    traces = [
        [json.loads(line) for line in (r / "train" / "trace" / "rank-0.jsonl").open()] for r in runs
    ]
    statuses = [
        AsrAdaptationStatus.model_validate_json((r / "status.json").read_text()) for r in runs
    ]

    # Each cycle starts right after its predecessor's second evaluation (cycleSteps 4 /
    # evalEvery 2): steps 1–4 in cycle 0, 5–8 in cycle 1, 9–12 in 2, 13–16 in 3.
    expected_cycles = [(step - 1) // CYCLE_STEPS for step in range(1, MAX_STEPS + 1)]
    for trace in traces:
        assert [t["step"] for t in trace] == list(range(1, MAX_STEPS + 1))
        assert [t["cycle"] for t in trace] == expected_cycles
        for cycle in range(4):
            lrs = {t["lr"] for t in trace if t["cycle"] == cycle}
            assert len(lrs) == 1, (cycle, lrs)  # one LR a cycle, set at its first step

    # The LR sequence, step by step, and every evaluation, bit for bit.
    assert [t["lr"] for t in traces[0]] == [t["lr"] for t in traces[1]]
    assert len({t["lr"] for t in traces[0]}) > 1  # the schedule did change the LR
    first, second = ([(e.step, e.cycle, e.lr, e.wer, e.loss) for e in h.evaluations]
                     for h in histories)  # fmt: skip
    assert [e[0] for e in first] == list(range(EVAL_EVERY, MAX_STEPS + 1, EVAL_EVERY))
    assert first == second
    # The operator's records of the four cycles the trainer ran agree too (a fifth may be
    # decided from step 16's evaluation before or after the trainer exits).
    assert [(c.cycle, c.learning_rate, c.sigma_wer) for c in statuses[0].cycles[:4]] == [
        (c.cycle, c.learning_rate, c.sigma_wer) for c in statuses[1].cycles[:4]
    ]
    assert [c.sigma_kind for c in statuses[0].cycles[:3]] == ["population"] * 3
