"""What the accuracy benchmarks (table2.py, adaptation.py) share: running and scoring systems.

- :func:`python_module` runs ``python -m MODULE`` on this checkout's packages
  (the virtual environment may hold another checkout in editable mode);
- :func:`evaluate` scores a model on a manifest with ``marco-trainer evaluate``,
  the one evaluator (and text normaliser) of every row of every table;
- :func:`adaptation` / :func:`marco_run` write an AsrAdaptation from the demo's
  manifest and run it with ``marco run``;
- :func:`error_shares` reads an evaluation's ``report.json`` back as
  substitution, deletion and insertion counts (jiwer's alignment, through
  ``marco_trainer.text``).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGE_FOLDERS = ("contract", "operator", "trainer", "demo")
sys.path[:0] = [str(REPO / folder) for folder in PACKAGE_FOLDERS]
DEMO_MANIFEST = REPO / "examples" / "demo-local.yaml"


def package_env() -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(REPO / folder) for folder in PACKAGE_FOLDERS]
    env["PYTHONPATH"] = os.pathsep.join(p for p in (*paths, env.get("PYTHONPATH")) if p)
    return env


def python_module(module: str, *args: str, log: Path | None = None) -> None:
    """``python -m module args`` on this checkout; output to ``log`` when given."""
    command = [sys.executable, "-m", module, *args]
    if log is None:
        subprocess.run(command, check=True, env=package_env())
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as sink:
        done = subprocess.run(command, env=package_env(), stdout=sink, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"{' '.join(command[2:4])} failed ({done.returncode}), {log}:\n{tail}")


def evaluate(
    model: Path, test: Path, out: Path, log: Path | None = None, in_process: bool = False
) -> float:
    """Test WER (%) of ``model`` on ``test``; the report lands in ``out``.

    ``in_process`` runs the same command in this process: for a caller that has
    torch and transformers loaded already (the HF recipe), where a new process
    would only pay their import again.
    """
    args = ["evaluate", "--model", str(model), "--manifest", str(test),
            "--output-dir", str(out), "--language", "en"]  # fmt: skip
    if in_process:
        from marco_trainer.cli import main

        if (code := main(args)) != 0:
            raise RuntimeError(f"marco-trainer evaluate {model} on {test} returned {code}")
    else:
        python_module("marco_trainer", *args, log=log)
    return float(json.loads((out / "result.json").read_text())["wer"])


def error_shares(report: Path) -> dict[str, float]:
    """Substitutions, deletions and insertions of an evaluation, as shares of its errors."""
    from marco_contract.scoring import EditCounts
    from marco_trainer.text import token_errors

    total = EditCounts()
    for utterance in json.loads(report.read_text())["utterances"]:
        total += token_errors(utterance["normalized_reference"], utterance["normalized_hypothesis"])
    errors = max(total.errors, 1)
    return {
        "substitutions": total.substitutions / errors,
        "deletions": total.deletions / errors,
        "insertions": total.insertions / errors,
        "wer": total.rate,
    }


def speaker_wers(report: Path, manifest: Path) -> dict[str, float]:
    """Test WER (%) per speaker of an evaluation, the speakers read from the manifest's
    ``speaker`` field (the scenarios write it): with two test speakers a split's WER is
    mostly how each voice fares, and a row should show which one moved."""
    from marco_contract.manifests import read_manifest

    speakers = {
        Path(u.audio_filepath).name: (u.model_extra or {}).get("speaker", "?")
        for u in read_manifest(manifest)
    }
    errors: dict[str, list[int]] = {}
    for utterance in json.loads(report.read_text())["utterances"]:
        speaker = speakers.get(Path(utterance["audio_filepath"]).name, "?")
        counts = errors.setdefault(speaker, [0, 0])
        counts[0] += utterance["word_errors"]
        counts[1] += utterance["reference_words"]
    return {s: round(100 * e / max(n, 1), 2) for s, (e, n) in sorted(errors.items())}


def demo_lr_bounds() -> tuple[float, float]:
    """The demo manifest's ``training.learningRate``: what the benchmark's marco runs
    train in unless told otherwise, and what every row from before the setting had."""
    bounds = yaml.safe_load(DEMO_MANIFEST.read_text())["spec"]["training"]["learningRate"]
    return float(bounds["min"]), float(bounds["max"])


def adaptation(
    name: str, augment: bool, training: dict[str, Any] | None = None, base: Path = DEMO_MANIFEST
) -> dict[str, Any]:
    """The demo's AsrAdaptation renamed, augmentation and profile on or off, training overridden."""
    manifest = copy.deepcopy(yaml.safe_load(base.read_text()))
    manifest["metadata"]["name"] = name
    spec = manifest["spec"]
    spec["augmentation"]["enabled"] = augment
    spec["profile"] = {"enabled": augment}
    spec["training"].update(training or {})
    return manifest


def free_port() -> int:
    """A TCP port nobody listens on now: the trainer's metrics endpoint of one run.

    The default (9400) is taken by any other ``marco run`` on the machine, and
    the local driver reads the trainer's evaluations from it, so each run gets
    its own.
    """
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def marco_run(
    manifest: dict[str, Any], data: Path, out: Path, log: Path | None = None
) -> dict[str, Any]:
    """``marco run`` one AsrAdaptation; its final test WER, best step and run directory."""
    path = out / f"{manifest['metadata']['name']}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(manifest))
    python_module("marco_operator", "run", "-f", str(path), "--data-dir", str(data),
                  "--output-dir", str(out), "--metrics-port", str(free_port()),
                  log=log)  # fmt: skip
    run_dir = out / "marco-asr" / manifest["metadata"]["name"]
    status = json.loads((run_dir / "status.json").read_text())
    if status.get("phase") != "Succeeded":
        raise RuntimeError(f"marco run {path}: phase {status.get('phase')}: {status}")
    return {
        "test_wer": status.get("finalWer"),
        "best_step": status.get("bestStep"),
        "steps": status.get("step"),
        "run_dir": str(run_dir),
        "report": str(run_dir / "evaluate" / "report.json"),
    }
