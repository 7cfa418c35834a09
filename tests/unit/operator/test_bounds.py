"""Every number of the spec is bounded above, and the LR bounds keep Eq. 1 off zero.

Each case is checked twice: pydantic (the operator and `marco run`) and the CRD's
schema and CEL (the API server, through tests/crd_check.py) must both refuse it.
"""

import math
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from marco_operator.api import describe_error, parse_spec
from marco_operator.crd import build_crd
from marco_operator.schedule import eq1_learning_rate
from tests.crd_check import validate_against_crd

ROOT = Path(__file__).resolve().parents[3]


def example():
    return yaml.safe_load((ROOT / "examples" / "whisper-large-v3-telephony.yaml").read_text())


def with_value(path: str, value):
    """The example with spec.<path> (dotted, camelCase) set to value."""
    obj = example()
    node = obj["spec"]
    *parents, leaf = path.split(".")
    for name in parents:
        node = node.setdefault(name, {})
    node[leaf] = value
    return obj


def test_every_number_of_the_spec_has_a_maximum_in_the_crd():
    spec = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    unbounded, numbers = [], 0

    def walk(node, path):
        nonlocal numbers
        if node.get("type") in ("integer", "number"):
            numbers += 1
            if "maximum" not in node:
                unbounded.append(path)
        for name, prop in node.get("properties", {}).items():
            walk(prop, f"{path}.{name}")
        if "items" in node:
            walk(node["items"], f"{path}[]")

    walk(spec, "spec")
    assert numbers > 40 and unbounded == []


# The absurd values, and neighbours: (field, refused value, largest accepted value).
ABSURD = [
    ("training.maxSteps", 10**12, 1_000_000),
    ("training.evalSamples", 10**9, 100_000),
    ("training.perDeviceBatchSize", 10**6, 1024),
    ("training.gradientAccumulation", 10**6, 1024),
    ("training.stopGracePeriodSeconds", 10**12, 86_400),
    ("training.seed", 2**32, 2**32 - 1),
    ("augmentation.copies", 101, 100),
    ("augmentation.shards", 1001, 1000),
    ("profile.shards", 1001, 1000),
    ("baseline.samples", 10**9, 1_000_000),
    ("evaluation.maxSamples", 10**9, 1_000_000),
    ("trials.steps", 10**9, 100_000),
    ("resources.nodes", 257, 256),
    ("resources.gpusPerNode", 17, 16),
    ("resources.backoffLimit", 101, 100),
    ("resources.maxRestarts", 101, 100),
    ("resources.stageDeadlineSeconds.train", 10**12, 90 * 86_400),
    ("decoding.maxNewTokens", 10**6, 4096),
    ("filter.maxDuration", 1e9, 3600.0),
]


@pytest.mark.parametrize(("path", "refused", "accepted"), ABSURD, ids=[c[0] for c in ABSURD])
def test_absurd_values_are_refused_by_both_and_the_bound_itself_accepted(path, refused, accepted):
    obj = with_value(path, refused)
    failures = validate_against_crd(obj)
    leaf = path.rsplit(".", 1)[-1]
    assert any(leaf in f and "greater than the maximum" in f for f in failures), failures
    with pytest.raises(ValidationError) as error:
        parse_spec(obj["spec"])
    assert describe_error(error.value).startswith(f"spec.{path}: Input should be less than")

    obj = with_value(path, accepted)
    assert validate_against_crd(obj) == []
    parse_spec(obj["spec"])


def test_eq1_rounds_an_lr_range_too_wide_to_zero():
    """Why the ratio cap exists: without it Eq. 1 can hand the trainer an LR of 0.0."""
    assert eq1_learning_rate(sigma_wer=1.0, lr_min=1e-17, lr_max=1.0, sigma_ref=0.5) == 0.0


LR_CASES = [
    # (learningRate, field named, message)
    ({"min": 1e-17, "max": 1.0}, "spec.training.learningRate.min", "greater than or equal to"),
    ({"min": 1e-7, "max": 2.0}, "spec.training.learningRate.max", "less than or equal to 1"),
    ({"min": 1e-9, "max": 1e-2}, "spec.training.learningRate", "at most 1e+06 times"),
    ({"min": 1e-12, "max": 1.0}, "spec.training.learningRate", "at most 1e+06 times"),
]


@pytest.mark.parametrize(("bounds", "field", "message"), LR_CASES)
def test_lr_bounds_that_eq1_could_round_away_are_refused_by_both(bounds, field, message):
    obj = with_value("training.learningRate", bounds)
    obj["spec"]["training"].pop("initialLearningRate", None)
    obj["spec"]["trials"] = {"enabled": False}
    failures = validate_against_crd(obj)
    assert failures and all("learningRate" in f for f in failures), failures
    with pytest.raises(ValidationError) as error:
        parse_spec(obj["spec"])
    described = describe_error(error.value)
    assert described.startswith(f"{field}: ") and message in described, described


@pytest.mark.parametrize(
    "bounds", [(1e-12, 1e-6), (1e-6, 1.0), (1e-7, 1e-5), (3e-9, 2.9999e-3)], ids=str
)
def test_the_widest_accepted_ranges_keep_eq1_positive_and_exact(bounds):
    lr_min, lr_max = bounds
    obj = with_value("training.learningRate", {"min": lr_min, "max": lr_max})
    obj["spec"]["training"].pop("initialLearningRate", None)
    obj["spec"]["trials"] = {"enabled": False}
    assert validate_against_crd(obj) == []
    parse_spec(obj["spec"])
    for sigma_wer in (0.0, 0.25, 0.5, 10.0):
        lr = eq1_learning_rate(sigma_wer, lr_min, lr_max, sigma_ref=0.5)
        exact = lr_max - (lr_max - lr_min) * min(sigma_wer / 0.5, 1.0)
        assert math.isfinite(lr) and lr > 0
        assert lr == pytest.approx(exact, rel=1e-9)
    assert eq1_learning_rate(1.0, lr_min, lr_max, 0.5) == pytest.approx(lr_min, rel=1e-9)
