"""Issue 13, point 1: what the API server refused only when the operator created a stage's
Job (after the stages before it ran) is refused at admission, by both layers, naming the
field: a resource quantity that is no Kubernetes quantity (HTTP 400: the Job cannot be
decoded), a mount path the pod already has or one over a folder the trainer needs (422,
or a container that cannot start).

The quantities are judged here against the grammar of k8s.io/apimachinery's
resource.Quantity as written out below, not read from api.py; the messages likewise.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from marco_operator.api import RESERVED_MOUNT_PATHS, describe_error, parse_spec
from marco_operator.plan import enabled_stages, stage_command
from marco_operator.resources import Owner, cluster_layout, stage_job
from tests.crd_check import validate_against_crd

ROOT = Path(__file__).resolve().parents[3]
BASE = yaml.safe_load((ROOT / "examples" / "whisper-large-v3-telephony.yaml").read_text())

QUANTITY_WORDS = (
    "must be a positive Kubernetes quantity: a number with an optional suffix "
    "(Ki Mi Gi Ti Pi Ei, n u m k M G T P E, or an exponent such as e9), e.g. 32Gi, 500m, 1.5"
)
RESERVED_WORDS = "must not be, lie inside or contain a folder the trainer's pod needs"
APART_WORDS = (
    "data.mountPath and output.mountPath must differ, neither inside the other (a pod mounts both)"
)

QUANTITY_FIELDS = ("cpu", "memory", "sharedMemory")
# Parsed by resource.ParseQuantity and positive.
GOOD_QUANTITIES = [
    "4", "500m", "0.5", ".5", "1.", "+2", "32Gi", "1.5Gi", "8Ei", "100M", "1k", "250u",
    "3n", "1e3", "1E3", "1e+3", "2e-3", "1E", "00.01", "1.e3", "12345678901234567890",
]  # fmt: skip
# Refused by ParseQuantity (malformed), or not positive, or not a size at all.
BAD_QUANTITIES = [
    "lots", "", "0", "0.0", "0Gi", ".", "+", "-1", "-1Gi", "1K", "1gi", "1Gib", "1 Gi",
    " 1Gi", "1Gi ", "1Gi\n", "1e", "1e+", "1e1.5", "1i", "1mi", "Gi", "1..5", "1,5",
    "0x10", "1e999", "½", "1" * 65,
]  # fmt: skip


def with_spec(**sections: dict) -> dict:
    obj = copy.deepcopy(BASE)
    for section, values in sections.items():
        obj["spec"].setdefault(section, {}).update(values)
    return obj


def pydantic_error(obj: dict) -> str | None:
    try:
        parse_spec(copy.deepcopy(obj["spec"]))
    except ValidationError as error:
        return describe_error(error)
    return None


@pytest.mark.parametrize("field", QUANTITY_FIELDS)
@pytest.mark.parametrize("value", GOOD_QUANTITIES)
def test_kubernetes_quantities_are_accepted_by_both(field, value):
    obj = with_spec(resources={field: value})
    assert validate_against_crd(obj) == []
    assert pydantic_error(obj) is None


@pytest.mark.parametrize("field", QUANTITY_FIELDS)
@pytest.mark.parametrize("value", BAD_QUANTITIES)
def test_anything_else_is_refused_by_both_naming_the_field(field, value):
    obj = with_spec(resources={field: value})
    failures = validate_against_crd(obj)
    assert any(f.startswith(f"spec.resources.{field}: ") for f in failures), failures
    message = pydantic_error(obj)
    assert message is not None and message.startswith(f"spec.resources.{field}: ")
    if len(value) <= 64:
        assert message == f"spec.resources.{field}: {QUANTITY_WORDS} (got {value!r})"


def the_pods_mounts(obj: dict) -> list[list[str]]:
    """Every stage pod's mount paths, as resources.py makes them."""
    spec = parse_spec(obj["spec"])
    owner = Owner("whisper-telephony", "asr", "uid")
    layout = cluster_layout(spec, owner.name)
    pods = []
    for stage in enabled_stages(spec):
        command = stage_command(
            spec, stage, layout, name=owner.name, family="encoder-decoder", learning_rate=1e-6
        )
        container = stage_job(spec, owner, command)["spec"]["template"]["spec"]["containers"][0]
        pods.append([m["mountPath"] for m in container["volumeMounts"]])
    return pods


def test_the_operators_own_mounts_and_the_images_folders_are_reserved():
    """What resources.py mounts besides data and output, and what Dockerfile.trainer puts in
    the image (its HOME and its Python environment), lie in a reserved folder: a user's mount
    path can then never collide with them."""
    obj = with_spec(data={"volumeClaim": "d"}, output={"volumeClaim": "o"})
    spec = obj["spec"]
    own = {
        path
        for mounts in the_pods_mounts(obj)
        for path in mounts
        if path not in (spec["data"].get("mountPath", "/data"), "/output")
    }
    assert {"/home/marco/.cache", "/etc/marco/control", "/dev/shm"} <= own
    dockerfile = (ROOT / "Dockerfile.trainer").read_text()
    image = set(re.findall(r"(?:VENV|HOME|HF_HOME)=(/\S+)", dockerfile))
    image |= set(re.findall(r"--home-dir (/\S+)", dockerfile))
    assert image == {"/opt/marco", "/home/marco", "/home/marco/.cache/huggingface"}
    for path in own | image | {"/dev/termination-log"}:
        assert any(path == r or path.startswith(r + "/") for r in RESERVED_MOUNT_PATHS), path


REFUSED_MOUNTS = [
    # (data.mountPath, output.mountPath, the field named, the words)
    ("/data", "/data", "spec", APART_WORDS),
    ("/data", "/data/", "spec", APART_WORDS),
    ("/data", "/data/out", "spec", APART_WORDS),
    ("/srv/data/x", "/srv/data", "spec", APART_WORDS),
    ("/data", "/home/marco", "spec.output.mountPath", RESERVED_WORDS),
    ("/data", "/home", "spec.output.mountPath", RESERVED_WORDS),
    ("/data", "/home/marco/cache", "spec.output.mountPath", RESERVED_WORDS),
    ("/data", "/opt", "spec.output.mountPath", RESERVED_WORDS),
    ("/data", "/opt/marco/lib", "spec.output.mountPath", RESERVED_WORDS),
    ("/data", "/dev/shm", "spec.output.mountPath", RESERVED_WORDS),
    ("/data", "/etc/marco", "spec.output.mountPath", RESERVED_WORDS),
    ("/usr/local", "/output", "spec.data.mountPath", RESERVED_WORDS),
    ("/proc/data", "/output", "spec.data.mountPath", RESERVED_WORDS),
    ("/lib/", "/output", "spec.data.mountPath", RESERVED_WORDS),
]
ACCEPTED_MOUNTS = [
    ("/data", "/output"),
    ("/mnt/data", "/mnt/output"),
    ("/data", "/database"),  # a prefix, not a parent
    ("/home/other", "/scratch/output"),
    ("/opt/corpus", "/devices"),
    ("/srv/data/", "/srv/out/"),
]


@pytest.mark.parametrize(("data", "output", "field", "words"), REFUSED_MOUNTS)
def test_mount_paths_that_collide_are_refused_by_both(data, output, field, words):
    obj = with_spec(
        data={"mountPath": data, "train": ["train.jsonl"]}, output={"mountPath": output}
    )
    failures = validate_against_crd(obj)
    crd_field = ".spec.output.mountPath" if field == "spec" else f".{field}"
    assert any(f.startswith(f"{crd_field}: ") and words in f for f in failures), failures
    message = pydantic_error(obj)
    assert message is not None and message.startswith(f"{field}: {words}"), message


@pytest.mark.parametrize(("data", "output"), ACCEPTED_MOUNTS)
def test_mount_paths_apart_are_accepted_and_the_pods_mounts_are_distinct(data, output):
    obj = with_spec(
        data={"mountPath": data, "volumeClaim": "d"},
        output={"mountPath": output, "volumeClaim": "o"},
    )
    assert validate_against_crd(obj) == []
    assert pydantic_error(obj) is None
    for mounts in the_pods_mounts(obj):
        folders = [m.rstrip("/") + "/" for m in mounts]
        for i, a in enumerate(folders):
            for b in folders[i + 1 :]:
                assert not (a.startswith(b) or b.startswith(a)), mounts


def test_a_threshold_of_zero_beside_the_default_fallback_is_refused_by_both():
    """Found by the property test run longer: without temperatureFallback (its default is
    five temperatures, which the CRD does not carry) compressionRatioThreshold 0 leaves the
    fallback without a trigger. The CRD accepted it, the operator then found it Invalid."""
    obj = with_spec(decoding={"compressionRatioThreshold": 0})
    words = "temperatureFallback needs compressionRatioThreshold or logprobThreshold"
    assert any(words in f for f in validate_against_crd(obj))
    assert pydantic_error(obj) == f"spec.decoding: {words}"
    for fix in ({"temperatureFallback": []}, {"logprobThreshold": -1.0}):
        obj = with_spec(decoding={"compressionRatioThreshold": 0, **fix})
        assert validate_against_crd(obj) == [] and pydantic_error(obj) is None


# Issue 14: spec.queueName names a Kueue LocalQueue, carried by the label
# kueue.x-k8s.io/queue-name: a DNS-1123 label (at most 63 of a-z, 0-9 and '-', alphanumeric
# at both ends), judged here by that rule written out, not read from api.py.
QUEUE_WORDS = (
    "queueName must be a DNS-1123 label naming a Kueue LocalQueue: at most 63 lowercase "
    "letters, digits and '-', starting and ending with a letter or digit"
)


@pytest.mark.parametrize("name", ["team-gpus", "q", "0", "a-1-b", "x" * 63, "9queue"])
def test_a_queue_name_kueue_takes_is_accepted_by_both(name):
    obj = copy.deepcopy(BASE)
    obj["spec"]["queueName"] = name
    assert validate_against_crd(obj) == []
    assert pydantic_error(obj) is None
    assert parse_spec(obj["spec"]).queue_name == name


@pytest.mark.parametrize(
    "name", ["", "Team", "team_gpus", "-team", "team-", "team.gpus", "x" * 64, "tëam", "a b"]
)
def test_a_queue_name_kueue_cannot_take_is_refused_by_both_naming_the_field(name):
    obj = copy.deepcopy(BASE)
    obj["spec"]["queueName"] = name
    failures = validate_against_crd(obj)
    assert any(f.startswith("spec.queueName: ") for f in failures), failures
    assert pydantic_error(obj) == f"spec.queueName: {QUEUE_WORDS} (got {name!r})"
