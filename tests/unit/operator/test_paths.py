"""Issue 13, point 4: every path of the spec stays on its volume, and the name makes valid
children. Each refusal is checked at both ends that apply it: the CRD (schema and CEL,
as the API server would) and the pydantic validators (the operator, `marco run`), with the
message naming the field; `marco run` refuses before it writes anything.

The expected messages are written out here, not imported from api.py: a changed message
must change this file too.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from marco_contract.layout import STAGES, Layout
from marco_operator.api import MAX_NAME_LENGTH, describe_error, parse_spec
from marco_operator.core import Observed, reconcile
from marco_operator.local import LocalRun
from marco_operator.names import job_name
from tests.crd_check import validate_against_crd

ROOT = Path(__file__).resolve().parents[3]

DATA_RULE = (
    "must name a file or folder inside the data volume: relative to it or absolute under "
    "data.mountPath, not the volume itself, with no '..' segment"
)
OUTPUT_RULE = (
    "must name a folder inside the output volume: relative to output.mountPath, not the "
    "volume itself, with no '..' segment"
)
MODEL_RULE = (
    "model.source must be a Hugging Face hub id (name or org/name) or a model folder under "
    "data.mountPath, with no '..' segment"
)
NAME_RULE = (
    "metadata.name must be a DNS-1035 label: lowercase letters, digits and '-', starting "
    "with a letter and ending with a letter or digit"
)


def example(name: str = "whisper-large-v3-telephony.yaml") -> dict:
    return yaml.safe_load((ROOT / "examples" / name).read_text())


def patched(patch: dict, base: dict | None = None) -> dict:
    obj = copy.deepcopy(base or example())
    for section, values in patch.items():
        obj["spec"].setdefault(section, {}).update(values)
    return obj


# (patch, the field pydantic names, the CRD's field, the rule, what pydantic adds)
REFUSED = [
    ({"data": {"train": ["../../etc"]}}, "spec.data.train[0]", ".spec.data.train", DATA_RULE,
     "'../../etc' has a '..' segment"),
    ({"data": {"train": ["ok.jsonl", "/etc/passwd"]}}, "spec.data.train[1]", ".spec.data.train",
     DATA_RULE, "'/etc/passwd' is not under data.mountPath /data"),
    ({"data": {"train": ["."]}}, "spec.data.train[0]", ".spec.data.train", DATA_RULE,
     "'.' is the data volume itself"),
    ({"data": {"validation": "/data/../etc/dev.jsonl"}}, "spec.data.validation",
     ".spec.data.validation", DATA_RULE, "'/data/../etc/dev.jsonl' has a '..' segment"),
    ({"data": {"validation": "/data"}}, "spec.data.validation", ".spec.data.validation",
     DATA_RULE, "'/data' is the data volume itself"),
    ({"data": {"test": "/data/./"}}, "spec.data.test", ".spec.data.test", DATA_RULE,
     "'/data/./' is the data volume itself"),
    ({"data": {"targetAudio": "/datasets/x/"}}, "spec.data.targetAudio", ".spec.data.targetAudio",
     DATA_RULE, "'/datasets/x/' is not under data.mountPath /data"),
    ({"data": {"targetAudio": "calls/../../x"}}, "spec.data.targetAudio",
     ".spec.data.targetAudio", DATA_RULE, "'calls/../../x' has a '..' segment"),
    ({"model": {"source": "/etc"}}, "spec", ".spec.model.source", MODEL_RULE,
     "'/etc' is not under data.mountPath /data"),
    ({"model": {"source": "../../models/x"}}, "spec", ".spec.model.source", MODEL_RULE,
     "'../../models/x' is neither a hub id nor an absolute path"),
    ({"model": {"source": "/data/models/../../etc"}}, "spec", ".spec.model.source", MODEL_RULE,
     "'/data/models/../../etc' has a '..' segment"),
    ({"augmentation": {"rirPath": "/usr/share/rirs"}}, "spec", ".spec.augmentation.rirPath",
     f"augmentation.rirPath {DATA_RULE}", "'/usr/share/rirs' is not under data.mountPath /data"),
    ({"augmentation": {"noisePath": "../noise"}}, "spec", ".spec.augmentation.noisePath",
     f"augmentation.noisePath {DATA_RULE}", "'../noise' has a '..' segment"),
    ({"output": {"path": "../../../tmp/x"}}, "spec.output.path", ".spec.output.path",
     OUTPUT_RULE, "'../../../tmp/x' has a '..' segment"),
    ({"output": {"path": "/tmp/x"}}, "spec.output.path", ".spec.output.path", OUTPUT_RULE,
     "'/tmp/x' is absolute"),
    ({"output": {"path": "./"}}, "spec.output.path", ".spec.output.path", OUTPUT_RULE,
     "'./' is the output volume itself"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("patch", "field", "crd_field", "rule", "detail"), REFUSED, ids=[c[4] for c in REFUSED]
)
def test_a_path_off_its_volume_is_refused_by_the_crd_and_the_validator(
    patch, field, crd_field, rule, detail
):
    obj = patched(patch)
    assert f"{crd_field}: {rule}" in validate_against_crd(obj)
    with pytest.raises(ValidationError) as error:
        parse_spec(obj["spec"])
    assert describe_error(error.value) == f"{field}: {rule} ({detail})"


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"data": {"train": [""]}}, "spec.data.train[0]"),
        ({"data": {"validation": ""}}, "spec.data.validation"),
        ({"output": {"path": ""}}, "spec.output.path"),
        ({"augmentation": {"rirPath": ""}}, "spec.augmentation.rirPath"),
    ],
    ids=lambda value: str(value),
)
def test_an_empty_path_is_refused_with_the_field_named(patch, field):
    """`data.train: [""]` read every top-level manifest of the volume."""
    obj = patched(patch)
    failures = validate_against_crd(obj)
    crd_field = field.removeprefix("spec.").replace("[0]", ".0")
    assert any(f.startswith(f"spec.{crd_field}: ") for f in failures), failures
    with pytest.raises(ValidationError) as error:
        parse_spec(obj["spec"])
    assert describe_error(error.value) == f"{field}: String should have at least 1 character"


def test_a_mount_path_must_be_a_plain_absolute_folder():
    for mount in ("/", "/data/../etc", "data", "/da ta"):
        obj = patched({"data": {"mountPath": mount}})
        assert any(f.startswith("spec.data.mountPath: ") for f in validate_against_crd(obj))
        with pytest.raises(ValidationError) as error:
            parse_spec(obj["spec"])
        assert describe_error(error.value).startswith("spec.data.mountPath: String should match")


ACCEPTED = [
    {"data": {"train": ["commonvoice/en/train.jsonl", "/data/more/train.jsonl", "dir/"]}},
    {"data": {"validation": "/data/callcentre/dev.jsonl", "targetAudio": "calls/./unlabeled/"}},
    {"data": {"mountPath": "/mnt/corpus.v2/", "train": ["/mnt/corpus.v2/train.jsonl"],
              "validation": "dev.jsonl", "test": "/mnt/corpus.v2/test.jsonl"}},
    {"model": {"source": "/data/models/whisper-tiny"}},
    {"model": {"source": "whisper-tiny"}},
    {"model": {"source": "Qwen/Qwen2-Audio-7B-Instruct"}},
    {"augmentation": {"rirPath": "rirs/", "noisePath": "/data/noise"}},
    {"output": {"path": "runs/2024/telephony"}},
    {"data": {"train": ["a..b.jsonl", ".hidden/train.jsonl"]}},  # no '..' *segment*
]  # fmt: skip


@pytest.mark.parametrize("patch", ACCEPTED, ids=lambda p: str(p)[:60])
def test_paths_inside_the_volumes_are_accepted_by_both(patch):
    obj = patched(patch)
    assert validate_against_crd(obj) == []
    spec = parse_spec(obj["spec"])
    # Read as written, and mapped onto the volume by the layout.
    layout = Layout(spec.data.mount_path, "/srv/volume", "/srv/out", "/srv/control")
    for path in spec.data.train:
        assert layout.data(path).startswith("/srv/volume/")


def test_the_examples_and_the_demo_stay_valid():
    """The cluster examples pass the CRD; the demo, a `marco run` manifest without a claim,
    passes everything but the cluster's rule that asks for one."""
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        obj = yaml.safe_load(path.read_text())
        parse_spec(obj["spec"])
        if path.name == "demo-local.yaml":
            (failure,) = validate_against_crd(obj)
            assert failure.startswith(".spec.data.volumeClaim: required on a cluster"), failure
            assert "volumeClaim" not in obj["spec"]["data"]
        else:
            assert validate_against_crd(obj) == [], path.name


# ------------------------------------------------------------------ names


@pytest.mark.parametrize("name", ["../../../x", "My-Run", "9-lives", "run-", "a_b", "a.b"])
def test_a_name_that_is_no_dns_label_is_refused(name, tmp_path):
    obj = example()
    obj["metadata"]["name"] = name
    assert f": {NAME_RULE}" in validate_against_crd(obj)
    # The operator marks it Invalid and starts nothing.
    outcome = reconcile(obj, Observed(now=1.0))
    assert outcome.start == [] and outcome.status["phase"] == "Invalid"
    assert outcome.status["message"] == f"{NAME_RULE} (got {name!r})"
    # `marco run` refuses it before anything is written.
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"^metadata\.name must be a DNS-1035 label"):
        LocalRun(obj, data_dir=tmp_path, output_dir=out)
    assert not out.exists()


def test_a_long_name_is_refused_by_both():
    obj = example()
    obj["metadata"]["name"] = "a" * (MAX_NAME_LENGTH + 1)
    message = (
        f"metadata.name must be at most {MAX_NAME_LENGTH} characters "
        "(child Jobs and pod hostnames append to it)"
    )
    assert f": {message}" in validate_against_crd(obj)
    outcome = reconcile(obj, Observed(now=1.0))
    assert outcome.status["message"].startswith(message)


def test_the_longest_name_leaves_every_child_a_valid_hostname():
    """63 characters at most for every pod: `<job>-<5 random>`, and for the Indexed Jobs
    (the sharded profile and augment, the distributed train) `<job>-<index>-<5 random>`."""
    name = "a" * MAX_NAME_LENGTH
    obj = example()
    obj["metadata"]["name"] = name
    assert validate_against_crd(obj) == []
    # The spec's bounds: 1000 shards, 256 training nodes, 16 trials (indexes from 0).
    last_index = {"profile": 999, "augment": 999, "train": 255}
    pods = [
        f"{job_name(name, stage)}-{last_index[stage]}-xxxxx"
        if stage in last_index
        else f"{job_name(name, stage, 15 if stage == 'trials' else None)}-xxxxx"
        for stage in STAGES
    ]
    assert max(len(pod) for pod in pods) == 63  # the profile's and augment's last shards


# ------------------------------------------------------------------ marco run


def demo() -> dict:
    return example("demo-local.yaml")


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (
            {"data": {"train": ["../../etc"]}},
            f"spec.data.train[0]: {DATA_RULE} ('../../etc' has a '..' segment)",
        ),
        (
            {"data": {"train": ["/etc/passwd"]}},
            f"spec.data.train[0]: {DATA_RULE} ('/etc/passwd' is not under data.mountPath /data)",
        ),
        (
            {"model": {"source": "/etc"}},
            f"spec: {MODEL_RULE} ('/etc' is not under data.mountPath /data)",
        ),
        (
            {"output": {"path": "../../../tmp/x"}},
            f"spec.output.path: {OUTPUT_RULE} ('../../../tmp/x' has a '..' segment)",
        ),
    ],
    ids=["data-parent", "data-absolute", "model-absolute", "output-parent"],
)
def test_marco_run_refuses_a_spec_off_its_volumes_before_any_work(patch, message, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError) as error:
        LocalRun(patched(patch, demo()), data_dir=tmp_path / "data", output_dir=out)
    assert str(error.value) == message
    assert not out.exists() and not (tmp_path / "tmp").exists()


def test_marco_run_refuses_an_output_folder_that_a_symlink_leads_out_of(tmp_path):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "marco-asr").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(ValueError) as error:
        LocalRun(demo(), data_dir=tmp_path, output_dir=out)
    assert str(error.value) == (
        f"spec.output.path: 'marco-asr/demo-callcentre' resolves to "
        f"{elsewhere.resolve() / 'demo-callcentre'}, not a folder inside --output-dir "
        f"{out.resolve()}"
    )
    assert list(elsewhere.iterdir()) == []


def test_marco_run_maps_the_spec_inside_its_directories(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    manifest = patched({"output": {"path": "runs/demo"}}, demo())
    run = LocalRun(manifest, data_dir=data, output_dir=out)
    assert run.root == out.resolve() / "runs" / "demo"
    layout = run.layout
    assert layout.data("/data/models/x") == f"{data.resolve()}/models/x"
    assert layout.data("target/dev.jsonl") == f"{data.resolve()}/target/dev.jsonl"
    assert layout.volumes.data_root == str(data.resolve())
    assert layout.volumes.output_root == str(out.resolve() / "runs" / "demo")


@pytest.mark.parametrize("path", ["../x.jsonl", "/etc/passwd", "/data/../etc", "a/../../x"])
def test_the_layout_never_maps_a_path_off_the_volume(path):
    """What the validators refuse, the layout refuses too, whoever asks it."""
    layout = Layout("/data", "/srv/volume", "/srv/out", "/srv/control")
    with pytest.raises(ValueError, match="outside the data volume"):
        layout.data(path)
