"""Issue 14, point 2: what a pod template override may not do, refused when the adaptation
is created (by the CRD's schema and CEL, judged by tests/crd_check.py as the API server
would, and by pydantic, which the operator and `marco run` read the spec with), naming the
field: replace or mount the operator's volumes, set its env or its labels, mount over the
data or output volume or a folder the trainer needs. A few checks need more than CEL can
say (a volume source's name, a mount's volume, a label key's syntax): pydantic alone
refuses those, and the operator then marks the adaptation Invalid before creating a Job.

The refusal words are written out here, not read from api.py."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from marco_operator.api import describe_error, parse_spec
from tests.crd_check import validate_against_crd

ROOT = Path(__file__).resolve().parents[3]
BASE = yaml.safe_load((ROOT / "examples" / "whisper-large-v3-telephony.yaml").read_text())
FIRST = "spec.podTemplateOverrides[0]"

VOLUME_WORDS = (
    "must not name a volume the operator mounts: data, output, control, endpoint, tmp, cache, shm"
)
ENV_WORDS = (
    "must not name an environment variable the operator sets: HF_HOME, MPLCONFIGDIR, "
    "PYTHONUNBUFFERED, HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE, HF_TOKEN, "
    "TORCH_DISABLE_SHARE_RDZV_TCP_STORE or any MARCO_* "
    "(the hub token: spec.model.tokenSecret)"
)
LABEL_WORDS = (
    "must not set a label the operator or the Job controller owns: asr.marco.dev/*, "
    "batch.kubernetes.io/*, app.kubernetes.io/managed-by, job-name, controller-uid"
)
ANNOTATION_WORDS = "must not set an annotation under asr.marco.dev/ (the operator's)"
RESERVED_WORDS = "must not be, lie inside or contain a folder the trainer's pod needs"
APART_WORDS = (
    "a volumeMount's mountPath must not be, lie inside or contain data.mountPath or "
    "output.mountPath"
)


def with_overrides(*entries: dict[str, Any]) -> dict[str, Any]:
    obj = copy.deepcopy(BASE)
    obj["spec"]["podTemplateOverrides"] = list(entries)
    return obj


def trainer(**fields: Any) -> dict[str, Any]:
    return {"spec": {"containers": [{"name": "trainer", **fields}]}}


def mounted(path: str, volume: str = "extra") -> dict[str, Any]:
    entry = trainer(volumeMounts=[{"name": volume, "mountPath": path}])
    entry["spec"]["volumes"] = [{"name": "extra", "emptyDir": {}}]
    return entry


def pydantic_error(obj: dict[str, Any]) -> str | None:
    try:
        parse_spec(copy.deepcopy(obj["spec"]))
    except ValidationError as error:
        return describe_error(error)
    return None


# (the override, the field named, the words): refused by CEL and by pydantic alike.
BOTH = [
    ({"spec": {"volumes": [{"name": "data", "emptyDir": {}}]}},
     f"{FIRST}.spec.volumes[0].name", VOLUME_WORDS),
    ({"spec": {"volumes": [{"name": "shm", "emptyDir": {"medium": "Memory"}}]}},
     f"{FIRST}.spec.volumes[0].name", VOLUME_WORDS),
    (trainer(volumeMounts=[{"name": "cache", "mountPath": "/hf"}]),
     f"{FIRST}.spec.containers[0].volumeMounts[0].name", VOLUME_WORDS),
    (trainer(env=[{"name": "MARCO_NUM_SHARDS", "value": "8"}]),
     f"{FIRST}.spec.containers[0].env[0].name", ENV_WORDS),
    (trainer(env=[{"name": "MARCO_TERMINATION_LOG", "value": "/tmp/log"}]),
     f"{FIRST}.spec.containers[0].env[0].name", ENV_WORDS),
    (trainer(env=[{"name": "A", "value": "1"}, {"name": "HF_HOME", "value": "/hf"}]),
     f"{FIRST}.spec.containers[0].env[1].name", ENV_WORDS),
    ({"metadata": {"labels": {"asr.marco.dev/stage": "train"}}},
     f"{FIRST}.metadata.labels", LABEL_WORDS),
    ({"metadata": {"labels": {"app.kubernetes.io/managed-by": "helm"}}},
     f"{FIRST}.metadata.labels", LABEL_WORDS),
    ({"metadata": {"labels": {"batch.kubernetes.io/job-name": "x"}}},
     f"{FIRST}.metadata.labels", LABEL_WORDS),
    ({"metadata": {"annotations": {"asr.marco.dev/anything": "x"}}},
     f"{FIRST}.metadata.annotations", ANNOTATION_WORDS),
    (mounted("/home/marco/cache"),
     f"{FIRST}.spec.containers[0].volumeMounts[0].mountPath", RESERVED_WORDS),
    (mounted("/tmp/scratch"),
     f"{FIRST}.spec.containers[0].volumeMounts[0].mountPath", RESERVED_WORDS),
    (mounted("/etc/marco"),
     f"{FIRST}.spec.containers[0].volumeMounts[0].mountPath", RESERVED_WORDS),
    (mounted("/data/models"), "spec.podTemplateOverrides", APART_WORDS),
    (mounted("/output"), "spec.podTemplateOverrides", APART_WORDS),
    (mounted("/"), f"{FIRST}.spec.containers[0].volumeMounts[0].mountPath", ""),
    (trainer(env=[{"name": "A", "value": "1", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}]),
     f"{FIRST}.spec.containers[0].env[0]", "value and valueFrom exclude each other"),
    (trainer(env=[{"name": "A", "valueFrom": {}}]),
     f"{FIRST}.spec.containers[0].env[0].valueFrom",
     "valueFrom needs exactly one of secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef"),
    (trainer(env=[{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"},
                                              "fieldRef": {"fieldPath": "status.podIP"}}}]),
     f"{FIRST}.spec.containers[0].env[0].valueFrom",
     "valueFrom needs exactly one of secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef"),
    (trainer(envFrom=[{"secretRef": {"name": "a"}, "configMapRef": {"name": "b"}}]),
     f"{FIRST}.spec.containers[0].envFrom[0]",
     "envFrom needs exactly one of configMapRef, secretRef"),
    (trainer(env=[{"name": "1A=", "value": "x"}]), f"{FIRST}.spec.containers[0].env[0].name", ""),
    ({"spec": {"containers": [{"name": "sidecar"}]}}, f"{FIRST}.spec.containers[0].name", ""),
    ({"targetJobs": [{"name": "training"}]}, f"{FIRST}.targetJobs[0].name", ""),
    ({"targetJobs": []}, f"{FIRST}.targetJobs", ""),
    ({"spec": {"volumes": [{"name": "Not_A_Label", "emptyDir": {}}]}},
     f"{FIRST}.spec.volumes[0].name", ""),
    ({"spec": {"imagePullSecrets": [{"name": "UPPER"}]}},
     f"{FIRST}.spec.imagePullSecrets[0].name", ""),
    ({"metadata": {"labels": {"team": "has space"}}}, f"{FIRST}.metadata.labels.team", ""),
    (trainer(volumeMounts=[{"name": "extra", "mountPath": "/x", "subPath": "../up"}]),
     f"{FIRST}.spec.containers[0].volumeMounts[0].subPath",
     "must name a folder of the volume: relative, not the volume itself, no '..'"),
]  # fmt: skip


def _schema_path(field: str) -> str:
    """jsonschema's way of naming a field (dots for indexes)."""
    return field.replace("[", ".").replace("]", "")


@pytest.mark.parametrize(
    ("entry", "field", "words"), BOTH, ids=[f"{c[1]}:{c[2][:20]}" for c in BOTH]
)
def test_cel_or_the_schema_and_pydantic_refuse_it_naming_the_field(entry, field, words):
    obj = with_overrides(entry)
    failures = [f.lstrip(".") for f in validate_against_crd(obj)]
    named = [f for f in failures if f.startswith((f"{field}:", f"{_schema_path(field)}:"))]
    assert named and all(words in f for f in named), failures
    message = pydantic_error(obj)
    assert message is not None and message.startswith(f"{field}:"), message
    assert words in message


# Refused by pydantic alone (the CRD keeps a volume's source and a map's keys as written):
# the operator marks the adaptation Invalid with this message before creating any Job.
PYDANTIC_ONLY = [
    ({"spec": {"volumes": [{"name": "v", "persistentVolumeclaim": {"claimName": "c"}}]}},
     f"{FIRST}.spec.volumes[0]: volume 'v': 'persistentVolumeclaim' is no volume source"),
    ({"spec": {"volumes": [{"name": "v"}]}},
     f"{FIRST}.spec.volumes[0]: volume 'v' needs exactly one volume source, an object"),
    ({"spec": {"volumes": [{"name": "v", "emptyDir": {}, "secret": {"secretName": "s"}}]}},
     f"{FIRST}.spec.volumes[0]: volume 'v' needs exactly one volume source, an object"),
    (trainer(volumeMounts=[{"name": "nowhere", "mountPath": "/x"}]),
     "spec.podTemplateOverrides: podTemplateOverrides[0].spec.containers[0].volumeMounts[0]"
     ".name 'nowhere' names no volume of the fetch pods"),
    ({"metadata": {"labels": {"bad key!": "x"}}},
     f"{FIRST}.metadata.labels: label key 'bad key!' is no qualified name"),
    (trainer(env=[{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]),
     f"{FIRST}.spec.containers[0].env: 'A' is listed twice (each name once)"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("entry", "message"), PYDANTIC_ONLY, ids=[m[-40:] for _, m in PYDANTIC_ONLY]
)
def test_what_cel_cannot_say_pydantic_refuses_naming_the_field(entry, message):
    assert (pydantic_error(with_overrides(entry)) or "").startswith(message)


def test_a_mount_needs_its_volume_in_every_stage_it_reaches():
    """Mounted for every stage, its volume given to train only: the fetch pods (the first
    stage: the example's model is a hub id) lack it."""
    volume_for_train = {
        "targetJobs": [{"name": "train"}],
        "spec": {"volumes": [{"name": "extra", "emptyDir": {}}]},
    }
    mount_everywhere = trainer(volumeMounts=[{"name": "extra", "mountPath": "/x"}])
    message = pydantic_error(with_overrides(volume_for_train, mount_everywhere))
    assert message == (
        "spec.podTemplateOverrides: podTemplateOverrides[1].spec.containers[0].volumeMounts[0]"
        ".name 'extra' names no volume of the fetch pods: add it to spec.volumes of an "
        "override that reaches fetch"
    )
    # The mount for train alone too: accepted.
    mount_for_train = {**mount_everywhere, "targetJobs": [{"name": "train"}]}
    assert pydantic_error(with_overrides(volume_for_train, mount_for_train)) is None
    assert validate_against_crd(with_overrides(volume_for_train, mount_for_train)) == []


API_KEY = {"name": "WANDB_API_KEY", "valueFrom": {"secretKeyRef": {"name": "wb", "key": "k"}}}
ANTI_AFFINITY = {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}}
ACCEPTED = [
    {"metadata": {"annotations": {"sidecar.istio.io/inject": "false"},
                  "labels": {"team": "asr", "example.com/cost-centre": "ml-42"}}},
    trainer(env=[API_KEY, {"name": "NCCL_IB_DISABLE", "value": "1"},
                 {"name": "MY_MARCO_THING", "value": "not the operator's"}]),
    trainer(envFrom=[{"prefix": "S3_", "secretRef": {"name": "bucket", "optional": True}}]),
    {"spec": {"imagePullSecrets": [{"name": "registry"}], "serviceAccountName": "trainer",
              "nodeSelector": {"pool": "h100"},
              "tolerations": [{"key": "spot", "operator": "Exists"}],
              "affinity": ANTI_AFFINITY}},
    mounted("/scratch"),
    mounted("/mnt/datasets"),
    {"targetJobs": [{"name": "train"}, {"name": "trials"}], **mounted("/opt/nccl")},
]  # fmt: skip


@pytest.mark.parametrize("entry", ACCEPTED)
def test_what_a_platform_adds_is_accepted_by_both(entry):
    obj = with_overrides(entry)
    assert validate_against_crd(obj) == []
    assert pydantic_error(obj) is None


def test_the_examples_override_is_accepted_and_read_as_written():
    spec = parse_spec(copy.deepcopy(BASE["spec"]))
    written = BASE["spec"]["podTemplateOverrides"]
    dumped = [o.model_dump(by_alias=True, exclude_none=True) for o in spec.pod_template_overrides]
    assert dumped == written
