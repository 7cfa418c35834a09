import copy
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from pydantic import ValidationError

from marco_operator.api import describe_error, parse_spec
from marco_operator.crd import CRD_FILE, build_crd, render_crd
from tests.crd_check import CRD_PATH, validate_against_crd

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def test_committed_crd_is_the_generated_one():
    assert CRD_PATH.name == CRD_FILE
    assert CRD_PATH.read_text() == render_crd(), "crds/ is stale: run `make crd`"


def test_crd_is_a_valid_kubernetes_object():
    kubernetes_validate.validate(build_crd(), "1.35.0", strict=True)


def test_crd_schema_is_structural():
    """No $ref, no null unions, no additionalProperties beside properties (API server rules)."""

    def walk(node, path="schema"):
        if isinstance(node, dict):
            assert "$ref" not in node and "anyOf" not in node and "title" not in node, path
            assert not ("properties" in node and "additionalProperties" in node), path
            if "properties" in node or "additionalProperties" in node:
                assert node.get("type") == "object", path
            for key, value in node.items():
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")

    version = build_crd()["spec"]["versions"][0]
    walk(version["schema"]["openAPIV3Schema"])
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Phase"] == ".status.phase" and columns["Best WER"] == ".status.bestWer"
    assert build_crd()["spec"]["names"]["shortNames"] == ["asra"]


def test_examples_exist_for_both_families():
    families = {yaml.safe_load(p.read_text())["spec"]["model"]["family"] for p in EXAMPLES}
    assert families == {"encoder-decoder", "llm"}


#: The manifests for `marco run` alone: no PersistentVolumeClaim (--data-dir stands for it).
LOCAL_EXAMPLES = {"demo-local.yaml"}
CLUSTER_EXAMPLES = [p for p in EXAMPLES if p.name not in LOCAL_EXAMPLES]


@pytest.mark.parametrize("path", CLUSTER_EXAMPLES, ids=lambda p: p.name)
def test_example_is_accepted_by_crd_schema_cel_and_pydantic(path):
    obj = yaml.safe_load(path.read_text())
    assert validate_against_crd(obj) == []
    assert obj["spec"]["data"]["volumeClaim"], "a cluster example names its shared volume"
    # Accepted, and read as written (not replaced by defaults on the way).
    spec = parse_spec(obj["spec"])
    assert spec.model.source == obj["spec"]["model"]["source"]
    assert spec.model.family == obj["spec"]["model"]["family"]
    assert spec.data.train == obj["spec"]["data"]["train"]


def whisper_example():
    return yaml.safe_load((ROOT / "examples" / "whisper-large-v3-telephony.yaml").read_text())


CASES = [
    ("spec.training.learningRate", {"training": {"learningRate": {"min": 1e-4, "max": 1e-6}}},
     "learningRate.min must be below learningRate.max"),
    ("spec.training", {"training": {"cycleSteps": 10, "evalEvery": 50}},
     "cycleSteps must be at least 2 x evalEvery"),
    # One evaluation a cycle: σ ≡ 0, every cycle at η_max whatever the WER does.
    ("spec.training", {"training": {"cycleSteps": 50, "evalEvery": 50}},
     "cycleSteps must be at least 2 x evalEvery"),
    ("spec.training", {"training": {"cycleSteps": 99, "evalEvery": 50}},
     "cycleSteps must be at least 2 x evalEvery"),
    ("spec.training", {"training": {"initialLearningRate": 1e-3}},
     "initialLearningRate must lie inside learningRate"),
    ("spec", {"data": {"targetAudio": None}}, "profile.enabled needs data.targetAudio"),
    ("spec", {"profile": {"enabled": False}},
     "augmentation.preset 'profile' needs profile.enabled"),
    ("spec.filter", {"filter": {"minDuration": 40}}, "minDuration must be below maxDuration"),
    ("spec", {"training": {"cleanSourceShare": 0.5}, "augmentation": {"keepOriginal": False}},
     "training.cleanSourceShare needs augmentation.enabled and augmentation.keepOriginal"),
    ("spec", {"training": {"cleanSourceShare": 0.5}, "augmentation": {"enabled": False}},
     "training.cleanSourceShare needs augmentation.enabled and augmentation.keepOriginal"),
    ("spec.augmentation", {"augmentation": {"preset": "telephony", "speedFactors": [0.9, 1.1]}},
     "speedFactors needs preset profile"),
    ("spec.augmentation", {"augmentation": {"preset": "telephony", "babbleTalkers": 3}},
     "babbleTalkers needs preset profile"),
    ("spec.augmentation", {"augmentation": {"babbleTalkers": 3, "noisePath": "noise"}},
     "babbleTalkers and noisePath both name the noise: set one"),
]  # fmt: skip


def merge(base, patch):
    for key, value in patch.items():
        if value is None:
            base.pop(key, None)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


@pytest.mark.parametrize(("field", "patch", "message"), CASES, ids=[c[2][:30] for c in CASES])
def test_cel_rule_and_pydantic_refuse_the_same_spec_with_the_field_named(field, patch, message):
    obj = whisper_example()
    obj["spec"] = merge(copy.deepcopy(obj["spec"]), patch)
    failures = validate_against_crd(obj)
    assert any(message in failure for failure in failures), failures
    with pytest.raises(ValidationError) as error:
        parse_spec(obj["spec"])
    assert describe_error(error.value).startswith(f"{field}: {message}")


def test_schema_refuses_wrong_types_and_unknown_enum_values():
    obj = whisper_example()
    obj["spec"]["training"]["maxSteps"] = 0
    obj["spec"]["model"]["family"] = "rnnt"
    failures = validate_against_crd(obj)
    assert any("maxSteps" in f for f in failures) and any("family" in f for f in failures)


def test_long_names_are_refused_by_cel():
    obj = whisper_example()
    obj["metadata"]["name"] = "x" * 46
    assert any("metadata.name" in f for f in validate_against_crd(obj))


def test_generator_commands_write_and_check(tmp_path, capsys):
    from marco_operator.cli import main

    for command, name in (("crd", CRD_FILE), ("rbac", "rules.yaml")):
        target = tmp_path / command
        target.mkdir()
        (target / name).write_text("stale\n")
        assert main([command, "-o", f"{target}/", "--check"]) == 1
        assert f"marco {command} --output" in capsys.readouterr().err
        assert main([command, "-o", f"{target}/"]) == 0
        assert main([command, "-o", f"{target}/", "--check"]) == 0
