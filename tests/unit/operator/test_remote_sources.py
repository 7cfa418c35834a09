"""Remote models and data (the fetch stage), the hub token, the push stage: the spec's
fields as the CRD and pydantic judge them, the plan, the Jobs, and core's stage order."""

import copy

import kubernetes_validate
import pytest
from pydantic import ValidationError

from marco_contract.formats import StageResult
from marco_contract.layout import Layout
from marco_operator.api import describe_error, parse_spec
from marco_operator.core import JobState, Observed, reconcile
from marco_operator.plan import enabled_stages, stage_command
from marco_operator.resources import Owner, cluster_layout, stage_job
from marco_trainer.cli import build_parser
from tests.crd_check import validate_against_crd
from tests.unit.operator.test_crd import merge, whisper_example

OWNER = Owner(name="remote", namespace="asr", uid="0f9d2c51-aaaa-bbbb-cccc-1234567890ab")
OUT = "/output/marco-asr/remote"
REMOTE = {
    "model": {"revision": "v1.2", "tokenSecret": {"name": "hf-token"}},
    "data": {
        "sources": [
            {"uri": "s3://corpora/callcentre/", "path": "callcentre"},
            {"uri": "hf://datasets/org/speech@main/train.jsonl", "path": "/data/commonvoice/en"},
        ]
    },
    "output": {"push": {"uri": "hf://org/whisper-callcentre", "private": False}},
}


def example(patch=None):
    obj = whisper_example()  # model.source: the hub id openai/whisper-large-v3
    obj["metadata"]["name"] = OWNER.name
    obj["spec"] = merge(copy.deepcopy(obj["spec"]), copy.deepcopy(patch or {}))
    return obj


def commands(spec):
    layout = cluster_layout(spec, OWNER.name)
    return {
        stage: stage_command(
            spec, stage, layout, name=OWNER.name, family="encoder-decoder", learning_rate=1e-6
        )
        for stage in enabled_stages(spec)
    }


def env_of(job):
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


# --- the spec --------------------------------------------------------------------------


def test_the_remote_fields_are_accepted_by_the_crd_and_pydantic():
    obj = example(REMOTE)
    assert validate_against_crd(obj) == []
    spec = parse_spec(obj["spec"])
    assert spec.model.token_secret is not None and spec.model.token_secret.key == "token"
    assert [s.path for s in spec.data.sources] == ["callcentre", "/data/commonvoice/en"]
    assert spec.output.push is not None and spec.output.push.private is False


REFUSED = [
    ("spec.data.sources[0].uri", "spec.data.sources.0.uri",
     {"data": {"sources": [{"uri": "https://example.com/corpus", "path": "c"}]}},
     "must be an s3://bucket/..., gs://bucket/... or hf://datasets/org/name/... URL"),
    # A model repo is no dataset: hf:// data names a dataset repo.
    ("spec.data.sources[0].uri", "spec.data.sources.0.uri",
     {"data": {"sources": [{"uri": "hf://org/model", "path": "c"}]}},
     "must be an s3://bucket/..., gs://bucket/... or hf://datasets/org/name/... URL"),
    ("spec.data", ".spec.data.sources",
     {"data": {"sources": [{"uri": "s3://corpora/x", "path": "../elsewhere"}]}},
     "data.sources[0].path must name a file or folder inside the data volume"),
    ("spec.data", ".spec.data.sources",
     {"data": {"sources": [{"uri": "s3://corpora/x", "path": "/srv/x"}]}},
     "data.sources[0].path must name a file or folder inside the data volume"),
    ("spec", ".spec.model.revision",
     {"model": {"source": "/data/models/whisper", "revision": "main"}},
     "model.revision needs a hub id in model.source"),
    ("spec.output.push.uri", "spec.output.push.uri",
     {"output": {"push": {"uri": "hf://org/name/extra"}}},
     "must be hf://org/name (a hub model repo), s3://bucket/... or gs://bucket/..."),
    ("spec.model.tokenSecret.name", "spec.model.tokenSecret.name",
     {"model": {"tokenSecret": {"name": "HF_Token"}}}, "String should match pattern"),
]  # fmt: skip


@pytest.mark.parametrize(("field", "crd_field", "patch", "message"), REFUSED,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(REFUSED)])  # fmt: skip
def test_bad_remote_fields_are_refused_by_both_with_the_field_named(
    field, crd_field, patch, message
):
    obj = example(patch)
    failures = validate_against_crd(obj)
    assert any(f.startswith(f"{crd_field}:") for f in failures), failures
    with pytest.raises(ValidationError) as error:
        parse_spec(obj["spec"])
    said = describe_error(error.value)
    assert said.startswith(f"{field}: ") and message in said, said


# --- the plan --------------------------------------------------------------------------


def test_fetch_runs_first_only_when_something_is_remote_and_push_last_only_when_asked():
    hub = parse_spec(example()["spec"])
    local = parse_spec(example({"model": {"source": "/data/models/whisper"}})["spec"])
    data_only = parse_spec(
        example({"model": {"source": "/data/models/whisper"}, "data": REMOTE["data"]})["spec"]
    )
    full = parse_spec(example(REMOTE)["spec"])
    assert enabled_stages(hub)[0] == "fetch"
    assert "fetch" not in enabled_stages(local) and "push" not in enabled_stages(local)
    assert enabled_stages(data_only)[0] == "fetch"
    assert enabled_stages(full) == [
        "fetch", "filter", "profile", "augment", "baseline", "train", "evaluate", "push",
    ]  # fmt: skip


def test_fetch_downloads_the_pinned_model_and_each_source_into_its_volume_folder():
    spec = parse_spec(example(REMOTE)["spec"])
    args = build_parser().parse_args(commands(spec)["fetch"].args)
    assert (args.model, args.revision, args.model_dir) == (
        "openai/whisper-large-v3", "v1.2", f"{OUT}/fetch/model")  # fmt: skip
    assert args.source == [
        ["s3://corpora/callcentre/", "/data/callcentre"],
        ["hf://datasets/org/speech@main/train.jsonl", "/data/commonvoice/en"],
    ]
    assert (args.data_root, args.output_root) == ("/data", OUT)


def test_every_later_stage_loads_the_fetched_copy_not_the_hub_id():
    spec = parse_spec(example(REMOTE)["spec"])
    argv = {stage: command.args for stage, command in commands(spec).items()}
    for stage in ("baseline", "train"):
        assert argv[stage][argv[stage].index("--model") + 1] == f"{OUT}/fetch/model", stage
    evaluate = argv["evaluate"]
    assert evaluate[evaluate.index("--reference-model") + 1] == f"{OUT}/fetch/model"
    assert "openai/whisper-large-v3" not in " ".join(
        a for s in argv if s != "fetch" for a in argv[s]
    )


def test_push_uploads_the_exported_model_with_the_spec_visibility():
    spec = parse_spec(example(REMOTE)["spec"])
    args = build_parser().parse_args(commands(spec)["push"].args)
    assert (args.model, args.to) == (f"{OUT}/train/export", "hf://org/whisper-callcentre")
    assert args.private is False and args.commit_message == "marco-asr: adapted model"
    private = parse_spec(example({"output": {"push": {"uri": "gs://models/x"}}})["spec"])
    assert build_parser().parse_args(commands(private)["push"].args).private is True


# --- the Jobs --------------------------------------------------------------------------


def test_only_fetch_and_push_are_online_and_get_the_token_from_its_secret():
    spec = parse_spec(example(REMOTE)["spec"])
    jobs = {s: stage_job(spec, OWNER, c) for s, c in commands(spec).items()}
    for stage, job in jobs.items():
        kubernetes_validate.validate(job, "1.35.0", strict=True)
        env = env_of(job)
        # The hub client's cache on the output volume, the same for every stage.
        assert env["HF_HOME"] == f"{OUT}/cache/huggingface", stage
        online = stage in ("fetch", "push")
        assert ("HF_HUB_OFFLINE" in env, "TRANSFORMERS_OFFLINE" in env) == (
            not online, not online), stage  # fmt: skip
        if online:
            assert env["HF_TOKEN"] == {"secretKeyRef": {"name": "hf-token", "key": "token"}}
        else:
            assert env["HF_HUB_OFFLINE"] == env["TRANSFORMERS_OFFLINE"] == "1"
            assert "HF_TOKEN" not in env, stage


def test_no_token_secret_no_token_and_fetch_needs_no_gpu():
    spec = parse_spec(example()["spec"])
    fetch = stage_job(spec, OWNER, commands(spec)["fetch"])
    assert "HF_TOKEN" not in env_of(fetch)
    (container,) = fetch["spec"]["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in container["resources"]["requests"]


def test_the_local_layout_puts_hf_home_and_the_model_under_the_run(tmp_path):
    spec = parse_spec(example()["spec"])
    layout = Layout(data_mount="/data", data_root=str(tmp_path / "d"),
                    output_root=str(tmp_path / "o"), control_file=str(tmp_path / "c"))  # fmt: skip
    command = stage_command(spec, "baseline", layout, name="x", family="auto")
    assert command.env["HF_HOME"] == f"{tmp_path}/o/cache/huggingface"
    assert command.args[command.args.index("--model") + 1] == f"{tmp_path}/o/fetch/model"


# --- core: the stage order, the push's result in the status ------------------------------


def test_core_runs_fetch_before_filter_and_records_the_push_result():
    body = example(REMOTE)
    body["metadata"].update(uid=OWNER.uid, generation=1)
    jobs: dict[str, JobState] = {}
    order = []
    while True:
        outcome = reconcile(copy.deepcopy(body), Observed(jobs=dict(jobs), now=1000.0))
        body["status"] = outcome.status
        if outcome.status["phase"] == "Succeeded":
            break
        (start,) = outcome.start
        order.append((start.stage, outcome.status["phase"]))
        message = "pushed to hf://org/whisper-callcentre: https://hub/commit/abc" if (
            start.stage == "push") else None  # fmt: skip
        wer = 20.0 if start.stage in ("baseline", "train", "evaluate") else None
        jobs[start.stage] = JobState(
            name=start.job_name,
            stage=start.stage,
            complete=True,
            result=StageResult(stage=start.stage, wer=wer, message=message),
        )
    assert order == [
        ("fetch", "Fetching"), ("filter", "Filtering"), ("profile", "Profiling"),
        ("augment", "Augmenting"), ("baseline", "Baseline"), ("train", "Training"),
        ("evaluate", "Evaluating"), ("push", "Pushing"),
    ]  # fmt: skip
    push = body["status"]["stages"]["push"]
    assert push["state"] == "Succeeded"
    assert push["message"] == "pushed to hf://org/whisper-callcentre: https://hub/commit/abc"
    assert "hf-token" not in str(body["status"])  # the Secret's name, let alone its value
