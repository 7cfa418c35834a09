"""`marco run` keeps the spec a run is on (`spec.json`) and judges a rerun's manifest against
it as the API server judges an update: the cases the process tests
(tests/integration/test_marco_run_processes.py) do not reach. Messages written out here."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from marco_operator.local import LocalRun, SpecFrozen

MANIFEST: dict[str, Any] = {
    "apiVersion": "asr.marco.dev/v1alpha1",
    "kind": "AsrAdaptation",
    "metadata": {"name": "edits"},
    "spec": {
        "model": {"source": "/data/model", "family": "encoder-decoder"},
        "data": {"train": ["train.jsonl"], "validation": "dev.jsonl"},
        "profile": {"enabled": False},
        "augmentation": {"enabled": False},
        "evaluation": {"enabled": False},
        "training": {"initialLearningRate": 1e-5, "maxSteps": 4},
    },
}


def local_run(tmp_path: Path, **training: Any) -> LocalRun:
    manifest = copy.deepcopy(MANIFEST)
    manifest["spec"]["training"].update(training)
    return LocalRun(manifest, data_dir=tmp_path, output_dir=tmp_path / "out")


def admitted(run: LocalRun) -> list[tuple[str, str, str]]:
    run.root.mkdir(parents=True, exist_ok=True)
    return [(e.type, e.reason, e.message) for e in run.admit_spec()]


def test_a_new_run_is_generation_1_and_saves_its_spec(tmp_path) -> None:
    run = local_run(tmp_path)
    assert admitted(run) == []
    assert run.manifest["metadata"]["generation"] == 1
    saved = json.loads(run.spec_path.read_text())
    assert saved == {"generation": 1, "spec": MANIFEST["spec"]}


def test_before_the_start_any_edit_is_taken_as_the_next_generation(tmp_path) -> None:
    admitted(local_run(tmp_path))
    run = local_run(tmp_path, maxSteps=8)  # no status: nothing started yet
    assert admitted(run) == [("Normal", "SpecChanged", "spec edited (generation 2): spec.training")]
    assert run.manifest["metadata"]["generation"] == 2
    events = [json.loads(line) for line in run.events_path.read_text().splitlines()]
    assert [e["reason"] for e in events] == ["SpecChanged"]


def test_a_default_written_out_is_no_edit(tmp_path) -> None:
    admitted(local_run(tmp_path))
    run = local_run(tmp_path)
    run.manifest["spec"]["resources"] = {"nodes": 1}  # the default, spelt out
    assert admitted(run) == []
    assert run.manifest["metadata"]["generation"] == 1


def test_a_started_run_that_kept_no_spec_takes_the_manifest_s_and_says_so(tmp_path) -> None:
    run = local_run(tmp_path)
    run.root.mkdir(parents=True)
    run.save_status({"phase": "Filtering", "observedGeneration": 1, "startedGeneration": 1})
    assert admitted(run) == [(
        "Warning", "SpecUnchecked",
        f"{run.spec_path} is missing: the spec this run started with is unknown, so this "
        "manifest's is taken unchecked as generation 1",
    )]  # fmt: skip
    assert json.loads(run.spec_path.read_text())["generation"] == 1


def test_an_unreadable_saved_spec_refuses_the_rerun(tmp_path) -> None:
    run = local_run(tmp_path)
    run.root.mkdir(parents=True)
    run.spec_path.write_text("{not json")
    with pytest.raises(SpecFrozen, match="cannot read the spec this run is on") as refused:
        run.admit_spec()
    assert str(run.spec_path) in str(refused.value)
    assert run.spec_path.read_text() == "{not json"
