"""What a stage Job does when one of its pods fails: the cluster's disruptions are free,
exits a retry cannot fix end the Job, the rest spend `resources.backoffLimit`."""

import argparse
from pathlib import Path

import kubernetes_validate
import pytest

from marco_contract.exit_codes import BAD_INPUT, NOT_RETRIABLE
from marco_trainer.cli import main
from tests.unit.operator.test_resources import K8S, jobs_by_stage, spec_of

#: Every example meant for a cluster (one with a data.volumeClaim; demo-local is `marco run`'s).
EXAMPLES = sorted(
    p.name
    for p in (Path(__file__).resolve().parents[3] / "examples").glob("*.yaml")
    if spec_of(p.name).data.volume_claim
)


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
