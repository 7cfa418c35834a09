"""The spec of a started run is immutable but for scheduling fields (issue 13, point 2):
the CRD's transition rule, judged by tests/crd_check.py as the API server would, and its
Python mirror api.frozen_changes. Which fields may change is written out here by hand,
not taken from api.MUTABLE_AFTER_START, which is what is checked."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from marco_operator.api import FROZEN_SPEC_MESSAGE, frozen_changes
from tests.crd_check import validate_against_crd

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "whisper-large-v3-telephony.yaml"

# (field path under spec, new value, what frozen_changes names; None: the edit is allowed)
EDITS: list[tuple[str, Any, str | None]] = [
    ("data.train", ["other/train.jsonl"], "spec.data"),
    ("model.source", "openai/whisper-small", "spec.model"),
    ("training.maxSteps", 10, "spec.training"),
    ("training.stopGracePeriodSeconds", 5, "spec.training"),
    ("output.path", "elsewhere", "spec.output"),
    ("evaluation.enabled", False, "spec.evaluation"),
    ("resources.image", "ghcr.io/marco-asr/trainer:9.9.9", "spec.resources.image"),
    ("resources.nodes", 2, "spec.resources.nodes"),
    ("resources.gpusPerNode", 2, "spec.resources.gpusPerNode"),
    ("resources.gpuResourceName", "amd.com/gpu", "spec.resources.gpuResourceName"),
    ("resources.memory", "64Gi", None),
    ("resources.cpu", "8", None),
    ("resources.sharedMemory", "16Gi", None),
    ("resources.nodeSelector", {"pool": "a100"}, None),
    ("resources.tolerations", [{"key": "gpu", "operator": "Exists"}], None),
    ("resources.priorityClassName", "batch-high", None),
    ("resources.serviceAccountName", "trainer", None),
    ("resources.imagePullPolicy", "Always", None),
    ("resources.backoffLimit", 5, None),
    ("resources.maxRestarts", 5, None),
    ("resources.stageDeadlineSeconds", {"train": 1000}, None),
    # The pod's shape: what its stages read (env, volumes) stays the run's (issue 14).
    (
        "podTemplateOverrides",
        [{"metadata": {"annotations": {"a": "b"}}}],
        "spec.podTemplateOverrides",
    ),
]


def _object(started: bool) -> dict[str, Any]:
    obj = yaml.safe_load(EXAMPLE.read_text())
    obj["status"] = {"phase": "Training", "observedGeneration": 3}
    if started:
        obj["status"]["startedGeneration"] = 1
    return obj


def _edited(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    new = copy.deepcopy(obj)
    *parents, leaf = path.split(".")
    node = new["spec"]
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return new


@pytest.mark.parametrize(("path", "value", "named"), EDITS, ids=[e[0] for e in EDITS])
def test_a_started_run_takes_only_scheduling_edits(path: str, value: Any, named: str | None):
    old = _object(started=True)
    new = _edited(old, path, value)
    assert validate_against_crd(new) == [], "the edit is a valid spec by itself"
    refused = validate_against_crd(new, old=old)
    assert refused == ([] if named is None else [f": {FROZEN_SPEC_MESSAGE}"])
    assert frozen_changes(old["spec"], new["spec"]) == ([] if named is None else [named])


@pytest.mark.parametrize(("path", "value", "named"), EDITS, ids=[e[0] for e in EDITS])
def test_before_the_start_every_valid_edit_is_taken(path: str, value: Any, named: str | None):
    old = _object(started=False)
    assert validate_against_crd(_edited(old, path, value), old=old) == []
    without_status = {k: v for k, v in old.items() if k != "status"}
    assert validate_against_crd(_edited(without_status, path, value), old=without_status) == []


def test_status_writes_and_annotations_of_a_started_run_pass():
    old = _object(started=True)
    new = copy.deepcopy(old)
    new["status"]["phase"] = "Failed"
    new["metadata"]["annotations"] = {"asr.marco.dev/retry": "1"}
    assert validate_against_crd(new, old=old) == []
