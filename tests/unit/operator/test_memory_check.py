"""The spec's memory estimate and the refusal of a spec that cannot fit (memory_check),
and reconcile() refusing the train Job before creating it."""

from pathlib import Path

import pytest
import yaml

from marco_contract.memory import GIB, model_dims
from marco_operator.api import parse_spec
from marco_operator.memory_check import (
    INSUFFICIENT_MEMORY,
    memory_refusal,
    quantity_bytes,
    stage_estimate,
)
from tests.crd_check import validate_against_crd
from tests.unit.operator.test_core import Cluster, body
from tests.unit.test_memory_estimate import QWEN2_AUDIO_7B, WHISPER_LARGE_V3

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
WHISPER = model_dims(WHISPER_LARGE_V3)
QWEN = model_dims(QWEN2_AUDIO_7B)


@pytest.mark.parametrize(
    ("quantity", "size"),
    [
        ("80Gi", 80 * 2**30),
        ("1.5G", 1_500_000_000),
        ("512Mi", 512 * 2**20),
        ("1e9", 10**9),
        ("64Ki", 65536),
        ("2000", 2000),
        ("+1k", 1000),
    ],
)
def test_quantities_in_bytes(quantity, size):
    assert quantity_bytes(quantity) == size


def spec_of(patch):
    spec = body(patch)["spec"]
    return parse_spec(spec)


def test_a_gpu_too_small_is_refused_naming_what_to_change():
    spec = spec_of(
        {
            "training": {"perDeviceBatchSize": 16, "precision": "fp32"},
            "resources": {"gpusPerNode": 4, "gpuMemory": "24Gi", "memory": "128Gi"},
        }
    )
    refusal = memory_refusal(spec, WHISPER, "train")
    assert refusal is not None
    estimate = stage_estimate(spec, WHISPER, "train")
    assert estimate.device.total > 24 * GIB
    assert f"{estimate.device.total / GIB:.1f} GiB per GPU" in refusal
    for remedy in (
        "spec.training.perDeviceBatchSize",
        "spec.training.gradientCheckpointing: true",
        "spec.training.precision: bf16",
        "spec.training.strategy: fsdp",
        "spec.resources.gpuMemory",
    ):
        assert remedy in refusal, remedy
    assert "lora" not in refusal  # no LoRA for the encoder-decoder family


def test_a_full_fine_tune_of_the_llm_is_told_about_lora():
    spec = spec_of(
        {
            "model": {"source": "Qwen/Qwen2-Audio-7B", "family": "llm", "lora": {"enabled": False}},
            "training": {"precision": "bf16", "gradientCheckpointing": True},
            "resources": {"gpusPerNode": 8, "gpuMemory": "80Gi", "memory": "512Gi"},
        }
    )
    refusal = memory_refusal(spec, QWEN, "train")
    assert refusal is not None and "LoRA (spec.model.lora.enabled: true)" in refusal
    assert "precision: bf16" not in refusal and "gradientCheckpointing" not in refusal


def test_the_spec_strategy_reaches_the_estimate_and_fsdp_can_make_it_fit():
    # The same full fine-tune on 8 GPUs of 24 GiB: replicated it cannot fit, sharded its
    # weights, gradients and AdamW states are each an eighth of DDP's (DDP's gradients
    # doubled for its buckets), so the refusal goes away.
    shape = {
        "training": {"perDeviceBatchSize": 1, "precision": "bf16"},
        "resources": {"nodes": 2, "gpusPerNode": 4, "gpuMemory": "24Gi", "memory": "128Gi"},
    }
    ddp = spec_of(shape)
    fsdp = spec_of({**shape, "training": {**shape["training"], "strategy": "fsdp"}})
    replicated = stage_estimate(ddp, WHISPER, "train").device
    sharded = stage_estimate(fsdp, WHISPER, "train").device
    assert sharded.weights * 8 == pytest.approx(replicated.weights, rel=1e-6)
    assert sharded.gradients * 16 == pytest.approx(replicated.gradients, rel=1e-6)
    assert memory_refusal(ddp, WHISPER, "train") is not None
    assert memory_refusal(fsdp, WHISPER, "train") is None


def test_without_gpu_memory_nothing_is_refused_on_the_gpu():
    spec = spec_of(
        {
            "training": {"perDeviceBatchSize": 64},
            "resources": {"gpusPerNode": 1, "memory": "64Gi"},
        }
    )
    assert stage_estimate(spec, WHISPER, "train").device.total > 80 * GIB
    assert memory_refusal(spec, WHISPER, "train") is None


def test_a_host_too_small_is_refused_with_the_memory_that_would_do():
    spec = spec_of({"resources": {"gpusPerNode": 4, "memory": "16Gi"}})
    refusal = memory_refusal(spec, WHISPER, "train")
    assert refusal is not None
    assert "spec.resources.memory is 16Gi" in refusal and "fewer GPUs per pod" in refusal
    estimate = stage_estimate(spec, WHISPER, "train")
    assert f"at least {estimate.host.total / GIB:.1f} GiB" in refusal
    # The size it names is enough.
    enough = f"{estimate.host.total / GIB:.1f}Gi"
    assert memory_refusal(spec_of({"resources": {"gpusPerNode": 4, "memory": enough}}),
                          WHISPER, "train") is None  # fmt: skip


def test_a_trial_runs_on_one_gpu_of_its_own():
    spec = spec_of({"resources": {"gpusPerNode": 4, "nodes": 2, "memory": "64Gi"}})
    trial = stage_estimate(spec, WHISPER, "trials")
    train = stage_estimate(spec, WHISPER, "train")
    assert (trial.world_size, trial.host.ranks) == (1, 1)
    assert (train.world_size, train.host.ranks) == (8, 4)
    # One rank: no DDP buckets.
    assert trial.device.gradients * 2 == train.device.gradients


@pytest.mark.parametrize(
    ("example", "dims"),
    [("whisper-large-v3-telephony.yaml", WHISPER), ("qwen2-audio-lora.yaml", QWEN)],
)
def test_the_examples_fit_their_80_gib_gpus_and_their_hosts(example, dims):
    spec = parse_spec(yaml.safe_load((EXAMPLES / example).read_text())["spec"])
    assert spec.resources.gpu_memory == "80Gi"  # H100-80GB, as the whisper example selects
    assert memory_refusal(spec, dims, "train") is None
    assert memory_refusal(spec, dims, "trials") is None


def run_to_the_train_job(cluster):
    for stage in ("filter", "profile", "augment", "baseline"):
        cluster.step()
        extra = {"wer": 40.0, "model": WHISPER} if stage == "baseline" else {}
        cluster.finish(stage, **extra)
    return cluster.step()


def test_a_run_that_cannot_fit_is_invalid_before_its_train_job_and_goes_on_once_it_fits():
    cluster = Cluster(body({"resources": {"gpusPerNode": 1, "gpuMemory": "16Gi"}}))
    outcome = run_to_the_train_job(cluster)
    status = cluster.obj["status"]
    assert cluster.phase == "Invalid"
    assert "train" not in cluster.jobs and outcome.start == []
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == INSUFFICIENT_MEMORY
    assert (
        ready["message"]
        == status["message"]
        == memory_refusal(parse_spec(cluster.obj["spec"]), WHISPER, "train")
    )
    warnings = [e for e in outcome.events if e.type == "Warning"]
    assert [e.reason for e in warnings] == [INSUFFICIENT_MEMORY, "PhaseChanged"]
    assert status["memory"]["device"]["total"] > 16 * GIB
    assert status["model"]["decoder"]["layers"] == 32
    assert cluster.step().events == []  # said once
    # A bigger GPU (resources.gpuMemory may change after the start): training starts.
    cluster.obj["spec"]["resources"]["gpuMemory"] = "80Gi"
    cluster.obj["metadata"]["generation"] = 2
    cluster.step()
    assert cluster.phase == "Training" and "train" in cluster.jobs


def test_the_status_with_its_estimate_is_what_the_crd_accepts():
    cluster = Cluster(body({"resources": {"gpusPerNode": 1}}))
    run_to_the_train_job(cluster)
    assert cluster.phase == "Training"
    obj = cluster.obj
    assert obj["status"]["memory"]["device"]["activations"] > 0
    # What the merge patch writes: a None deletes its field, it is never stored.
    assert validate_against_crd(without_none(obj)) == []
    # The schema holds the estimate strictly: typed, non-negative, no unknown field.
    negative = without_none(obj)
    negative["status"]["memory"]["device"]["total"] = -1
    assert validate_against_crd(negative) == [
        "status.memory.device.total: -1 is less than the minimum of 0"
    ]
    unknown = without_none(obj)
    unknown["status"]["memory"]["host"]["swap"] = 1
    assert validate_against_crd(unknown) == ['unknown field "status.memory.host.swap"']


def without_none(value):
    if isinstance(value, dict):
        return {k: without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_none(v) for v in value]
    return value
