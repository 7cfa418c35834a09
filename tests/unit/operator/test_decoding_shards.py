"""baseline.shards and evaluation.shards (issue 15 point 4): bounded by pydantic and the
CRD alike, Indexed Jobs of one GPU per shard on a cluster, a reason for a shared volume,
and one result per Job: the operator merges the shards' termination messages."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import ValidationError

from marco_contract.formats import StageResult
from marco_contract.scoring import EditCounts
from marco_operator.api import describe_error, parse_spec
from marco_operator.plan import stage_command
from marco_operator.reconciler import _job_state
from marco_operator.resources import Owner, cluster_layout, stage_job
from marco_operator.storage import concurrent_pods
from tests.crd_check import validate_against_crd

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = yaml.safe_load((ROOT / "examples" / "whisper-large-v3-telephony.yaml").read_text())
OWNER = Owner(name="whisper-telephony", namespace="asr", uid="0f9d2c51-aaaa-bbbb-cccc-1234567890ab")
K8S = "1.35.0"


def manifest(**sections: dict[str, Any]) -> dict[str, Any]:
    obj = copy.deepcopy(EXAMPLE)
    for section, values in sections.items():
        obj["spec"].setdefault(section, {}).update(values)
    return obj


def refused_by_both(obj: dict[str, Any], field: str, words: str) -> None:
    failures = validate_against_crd(obj)
    assert failures and any(words in f for f in failures), failures
    with pytest.raises(ValidationError) as error:
        parse_spec(obj["spec"])
    assert describe_error(error.value).startswith(f"spec.{field}"), describe_error(error.value)


def test_one_shard_by_default_is_today_s_plain_job():
    spec = parse_spec(EXAMPLE["spec"])
    assert spec.baseline.shards == spec.evaluation.shards == 1
    layout = cluster_layout(spec, OWNER.name)
    for stage in ("baseline", "evaluate"):
        command = stage_command(spec, stage, layout, name=OWNER.name, family="encoder-decoder")
        job = stage_job(spec, OWNER, command)["spec"]
        assert job["completions"] == 1 and "completionMode" not in job, stage


@pytest.mark.parametrize(("stage", "section"), [("baseline", "baseline"),
                                                ("evaluate", "evaluation")])  # fmt: skip
def test_shards_make_an_indexed_job_of_one_gpu_per_shard(stage, section):
    obj = manifest(**{section: {"shards": 3}})
    assert validate_against_crd(obj) == []
    spec = parse_spec(obj["spec"])
    command = stage_command(
        spec, stage, cluster_layout(spec, OWNER.name), name=OWNER.name, family="encoder-decoder"
    )
    job = stage_job(spec, OWNER, command)
    kubernetes_validate.validate(job, K8S, strict=True)
    body = job["spec"]
    assert (body["completions"], body["parallelism"], body["completionMode"]) == (3, 3, "Indexed")
    assert body["backoffLimitPerIndex"] == spec.resources.backoff_limit
    (container,) = body["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MARCO_NUM_SHARDS"] == "3"  # with JOB_COMPLETION_INDEX: the shard's flags
    gpu = spec.resources.gpu_resource_name
    assert container["resources"]["limits"][gpu] == "1"  # one GPU per shard
    # The command is the unsharded one: the shard comes from the pod's environment.
    unsharded = stage_command(
        parse_spec(EXAMPLE["spec"]), stage, cluster_layout(spec, OWNER.name),
        name=OWNER.name, family="encoder-decoder",
    )  # fmt: skip
    assert command.args == unsharded.args


@pytest.mark.parametrize("section", ["baseline", "evaluation"])
@pytest.mark.parametrize(("value", "words"), [(0, "less than the minimum"),
                                              (257, "greater than the maximum")])  # fmt: skip
def test_shards_out_of_bounds_are_refused_by_both(section, value, words):
    obj = manifest(**{section: {"shards": value}})
    obj["spec"]["baseline"]["samples"] = 1000
    refused_by_both(obj, f"{section}.shards", words)


def test_the_bound_itself_is_accepted():
    obj = manifest(baseline={"shards": 256, "samples": 256}, evaluation={"shards": 256})
    assert validate_against_crd(obj) == []
    parse_spec(obj["spec"])


def test_more_baseline_shards_than_samples_are_refused_by_both():
    obj = manifest(baseline={"shards": 8, "samples": 5})
    refused_by_both(obj, "baseline", "baseline.shards must not exceed samples")
    with pytest.raises(ValidationError, match=r"baseline.shards \(8\) is above baseline.samples"):
        parse_spec(obj["spec"])


def test_more_evaluation_shards_than_max_samples_are_refused_by_both():
    obj = manifest(evaluation={"shards": 4, "maxSamples": 3})
    refused_by_both(obj, "evaluation", "evaluation.shards must not exceed maxSamples")
    # Without maxSamples the whole test set is decoded: any number of shards is accepted.
    obj = manifest(evaluation={"shards": 4})
    assert validate_against_crd(obj) == []
    parse_spec(obj["spec"])


def test_shards_are_pods_at_once_on_the_shared_volume():
    spec = parse_spec(manifest(baseline={"shards": 2}, evaluation={"shards": 4})["spec"])
    reasons = concurrent_pods(spec)
    assert "spec.baseline.shards is 2" in reasons and "spec.evaluation.shards is 4" in reasons
    off = parse_spec(
        manifest(
            baseline={"shards": 2, "enabled": False}, evaluation={"shards": 4, "enabled": False}
        )["spec"]
    )
    assert not any("baseline" in r or "evaluation" in r for r in concurrent_pods(off))


# -- the operator's one result of a sharded Job ------------------------------------------


def counts(hits: int, subs: int, dels: int, ins: int) -> EditCounts:
    return EditCounts(hits=hits, substitutions=subs, deletions=dels, insertions=ins,
                      reference_words=hits + subs + dels)  # fmt: skip


#: Three shards' counts, of different sizes: the mean of their rates is not the set's rate.
SHARD_COUNTS = [counts(7, 2, 1, 0), counts(1, 0, 3, 1), counts(19, 1, 0, 0)]


def shard_result(index: int) -> StageResult:
    words = SHARD_COUNTS[index]
    return StageResult(stage="evaluate", wer=round(words.rate, 4), reference_wer=50.0,
                       counts={"evaluated": 2}, family="encoder-decoder",
                       shard_index=index, num_shards=3, word_counts=words,
                       reference_word_counts=counts(5, 5, 0, 0))  # fmt: skip


def pod(index: int, created: str, result: StageResult | None, exit_code: int = 0) -> dict:
    message = result.to_termination_message() if result is not None else "Traceback"
    labels = {"job-name": "x-evaluate", "batch.kubernetes.io/job-completion-index": str(index)}
    return {
        "metadata": {"name": f"x-evaluate-{index}-{created[-3:-1]}", "labels": labels,
                     "creationTimestamp": created},
        "status": {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "containerStatuses": [
                {"state": {"terminated": {"exitCode": exit_code, "message": message}}}
            ],
        },
    }  # fmt: skip


JOB = {
    "metadata": {"name": "x-evaluate", "labels": {"asr.marco.dev/stage": "evaluate"}},
    "spec": {"completionMode": "Indexed", "completions": 3},
    "status": {"conditions": [{"type": "Complete", "status": "True"}]},
}


def test_a_sharded_job_s_result_is_the_merge_of_every_index_s():
    # Index 1 failed once and was retried: its retry's result counts, not the failure.
    pods = [
        pod(0, "2025-01-01T00:00:00Z", shard_result(0)),
        pod(1, "2025-01-01T00:00:01Z", None, exit_code=1),
        pod(1, "2025-01-01T00:05:00Z", shard_result(1)),
        pod(2, "2025-01-01T00:00:02Z", shard_result(2)),
    ]
    result = _job_state(JOB, pods[::-1]).result
    assert result is not None
    errors = (2 + 1 + 0) + (0 + 3 + 1) + (1 + 0 + 0)
    reference = (7 + 2 + 1) + (1 + 0 + 3) + (19 + 1 + 0)
    assert result.wer == round(100 * errors / reference, 4)
    assert result.reference_wer == 50.0  # 15 errors in 30 words
    assert result.counts == {"evaluated": 6}
    assert result.ok and result.family == "encoder-decoder"


def test_a_shard_without_a_result_fails_the_stage_without_a_wer_and_says_why():
    pods = [pod(0, "2025-01-01T00:00:00Z", shard_result(0)),
            pod(2, "2025-01-01T00:00:02Z", shard_result(2))]  # fmt: skip
    state = _job_state(JOB, pods)
    assert state.failed and not state.complete
    assert state.failure_reason is not None
    assert state.failure_reason.startswith("ShardsFailed: ")
    assert "no result from shard(s) [1]" in state.failure_reason
    assert state.result is not None and state.result.wer is None


def test_shards_that_decoded_nothing_at_all_fail_the_stage_as_one_pod_would():
    """One process exits 1 when no utterance could be transcribed; its shards each exit 0
    (a shard's slice may be all unreadable while others decode): the merge decides."""
    nothing = [
        StageResult(
            stage="evaluate",
            wer=0.0,
            counts={"evaluated": 0, "skipped": 1},
            shard_index=i,
            num_shards=3,
            word_counts=EditCounts(),
        )
        for i in range(3)
    ]
    pods = [pod(i, f"2025-01-01T00:00:0{i}Z", nothing[i]) for i in range(3)]
    state = _job_state(JOB, pods)
    assert state.failed and not state.complete
    assert state.failure_reason == "ShardsFailed: no utterance could be transcribed"


def test_an_unsharded_job_s_result_is_its_pod_s_as_before():
    single = StageResult(stage="evaluate", wer=12.5, word_counts=counts(7, 1, 0, 0))
    plain = pod(0, "2025-01-01T00:00:00Z", single)
    del plain["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"]
    assert _job_state(JOB, [plain]).result == single
