"""What a stage Job does when one of its pods fails: the cluster's disruptions are free,
exits a retry cannot fix end the Job, the rest spend `resources.backoffLimit`."""

import argparse
import shlex
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from marco_contract.exit_codes import BAD_INPUT, NOT_RETRIABLE
from marco_operator.api import parse_spec
from marco_trainer.cli import main
from tests.crd_check import crd_schema, validate_against_crd
from tests.unit.operator.test_resources import K8S, jobs_by_stage, spec_of

EXAMPLES_DIR = Path(__file__).resolve().parents[3] / "examples"

#: Every example meant for a cluster (one with a data.volumeClaim; demo-local is `marco run`'s).
EXAMPLES = sorted(p.name for p in EXAMPLES_DIR.glob("*.yaml") if spec_of(p.name).data.volume_claim)


def _argparse_usage_code():
    # What argparse itself exits with on a usage error, asked of argparse, not of our code.
    parser = argparse.ArgumentParser()
    with pytest.raises(SystemExit) as usage:
        parser.parse_args(["--no-such-flag"])
    return usage.value.code


def test_the_cluster_examples_are_found():
    assert {"whisper-large-v3-telephony.yaml", "qwen2-audio-lora.yaml"} <= set(EXAMPLES)


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_stage_job_ignores_disruptions_and_fails_at_once_on_unfixable_exits(example):
    jobs = jobs_by_stage(spec_of(example))
    assert jobs
    for stage, job in jobs.items():
        spec = job["spec"]
        assert spec["template"]["spec"]["restartPolicy"] == "Never", stage
        (container,) = spec["template"]["spec"]["containers"]
        ignore, fail = spec["podFailurePolicy"]["rules"]
        # Order matters (first match wins): a reclaimed pod is never taken for a bad exit.
        assert ignore == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}
        assert fail["action"] == "FailJob", stage
        assert fail["onExitCodes"]["containerName"] == container["name"], stage
        assert fail["onExitCodes"]["operator"] == "In"
        assert fail["onExitCodes"]["values"] == list(NOT_RETRIABLE)
        kubernetes_validate.validate(job, K8S, strict=True)


def test_the_unfixable_codes_are_argparse_usage_and_bad_input_and_never_success():
    assert _argparse_usage_code() in NOT_RETRIABLE
    assert BAD_INPUT in NOT_RETRIABLE
    # An exit 0 in a FailJob rule would fail every finished pod; 1 is any crash (retriable);
    # 137/143 are kills (OOM, a drain's SIGTERM): none of them may be declared unfixable.
    assert not {0, 1, 137, 143} & set(NOT_RETRIABLE)


def test_an_unknown_flag_exits_with_a_not_retriable_code():
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--no-such-flag"])
    assert exit_.value.code in NOT_RETRIABLE


TRAIN = ["train", "--model", "m", "--train-manifest", "a", "--validation-manifest", "v",
         "--output-dir", "o"]  # fmt: skip


def test_train_options_outside_the_spec_bounds_exit_bad_input_and_say_why(capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*TRAIN, "--lora-r", "0"])
    assert exit_.value.code == BAD_INPUT
    assert "--lora-r" in capsys.readouterr().err


def test_evaluate_options_outside_the_spec_bounds_exit_bad_input(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "--model", "m", "--manifest", str(tmp_path / "m.jsonl"),
              "--output-dir", str(tmp_path / "o"), "--max-new-tokens", "0"])  # fmt: skip
    assert exit_.value.code == BAD_INPUT
    assert "--max-new-tokens" in capsys.readouterr().err


def test_a_data_stage_that_cannot_read_its_manifest_exits_bad_input(tmp_path):
    missing = tmp_path / "missing.jsonl"
    code = main(["filter", "--manifest", str(missing), "--output-dir", str(tmp_path / "o")])
    assert code == BAD_INPUT


@pytest.mark.parametrize("example", EXAMPLES)
def test_indexed_jobs_retry_each_index_on_its_own_and_others_once_for_all(example):
    spec = spec_of(example)
    jobs = jobs_by_stage(spec)
    indexed = {stage for stage, job in jobs.items() if job["spec"].get("completionMode")}
    # The train Job is Indexed whatever its node count (torchrun's ranks); the others when
    # they have more than one completion (their shards).
    assert "train" in indexed
    assert indexed == {"train"} | {s for s, j in jobs.items() if j["spec"]["completions"] > 1}
    for stage, job in jobs.items():
        if stage in indexed:
            assert job["spec"]["completionMode"] == "Indexed"
            assert job["spec"]["backoffLimitPerIndex"] == spec.resources.backoff_limit, stage
            assert job["spec"]["maxFailedIndexes"] == 0, stage
            # A Job-wide limit would count every index's failures together again.
            assert "backoffLimit" not in job["spec"], stage
        else:
            assert job["spec"]["backoffLimit"] == spec.resources.backoff_limit, stage
            assert "backoffLimitPerIndex" not in job["spec"], stage
            assert "maxFailedIndexes" not in job["spec"], stage


def test_the_examples_sharded_stages_and_two_node_training_get_per_index_retries():
    # Read in the examples themselves: telephony shards profile 4 and augment 8 ways and
    # trains on 1 node (still Indexed: torchrun); the Qwen2-Audio example trains on 2.
    telephony = jobs_by_stage(spec_of("whisper-large-v3-telephony.yaml"))
    assert telephony["profile"]["spec"]["completions"] == 4
    assert telephony["augment"]["spec"]["completions"] == 8
    for stage in ("profile", "augment", "train"):
        assert telephony[stage]["spec"]["backoffLimitPerIndex"] == 2, stage  # the default
    assert "backoffLimitPerIndex" not in telephony["baseline"]["spec"]
    qwen = jobs_by_stage(spec_of("qwen2-audio-lora.yaml"))["train"]["spec"]
    assert (qwen["completions"], qwen["backoffLimitPerIndex"]) == (2, 2)


def _torchrun_flags(job):
    # The container runs `sh -c "exec torchrun ..."`: its flags, as the shell splits them.
    script = job["spec"]["template"]["spec"]["containers"][0]["command"][-1]
    words = shlex.split(script)
    assert words[:2] == ["exec", "torchrun"]
    return words[2 : words.index("marco-trainer")]


@pytest.mark.parametrize("max_restarts", [0, 7])
def test_torchrun_restarts_its_workers_as_many_times_as_the_spec_says(max_restarts):
    raw = yaml.safe_load((EXAMPLES_DIR / "qwen2-audio-lora.yaml").read_text())["spec"]
    raw["resources"]["maxRestarts"] = max_restarts
    jobs = jobs_by_stage(parse_spec(raw))
    flags = _torchrun_flags(jobs["train"])
    assert [f for f in flags if f.startswith("--max-restarts")] == [
        f"--max-restarts={max_restarts}"
    ]
    assert "--nnodes=2" in flags  # the same command, the example's two nodes


def test_the_crd_defaults_max_restarts_and_refuses_negative_ones():
    obj = yaml.safe_load((EXAMPLES_DIR / "whisper-large-v3-telephony.yaml").read_text())
    assert "maxRestarts" not in obj["spec"]["resources"]
    schema = crd_schema()["properties"]["spec"]["properties"]["resources"]
    default = schema["properties"]["maxRestarts"]["default"]
    # One source: the CRD's default is the pydantic default the torchrun command uses.
    assert default == parse_spec(obj["spec"]).resources.max_restarts == 3
    assert f"--max-restarts={default}" in _torchrun_flags(jobs_by_stage(spec_of())["train"])
    obj["spec"]["resources"]["maxRestarts"] = -1
    failures = validate_against_crd(obj)
    assert failures and all("maxRestarts" in f for f in failures), failures
