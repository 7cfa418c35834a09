from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from marco_contract.formats import Directive
from marco_contract.layout import STAGES
from marco_operator.api import parse_spec
from marco_operator.plan import enabled_stages, stage_command
from marco_operator.resources import (
    LABEL_ADAPTATION,
    LABEL_MANAGED_BY,
    LABEL_STAGE,
    Owner,
    cluster_layout,
    control_configmap,
    stage_job,
    train_service,
)

ROOT = Path(__file__).resolve().parents[3]
OWNER = Owner(name="whisper-telephony", namespace="asr", uid="0f9d2c51-aaaa-bbbb-cccc-1234567890ab")
K8S = "1.35.0"


def spec_of(example="whisper-large-v3-telephony.yaml"):
    return parse_spec(yaml.safe_load((ROOT / "examples" / example).read_text())["spec"])


def all_children(spec):
    layout = cluster_layout(spec, OWNER.name)
    children = [control_configmap(OWNER, Directive(cycle=0, learning_rate=1e-6)),
                train_service(OWNER)]  # fmt: skip
    for stage in enabled_stages(spec):
        command = stage_command(
            spec, stage, layout, name=OWNER.name, family=spec.model.family, learning_rate=1e-6
        )
        children.append(stage_job(spec, OWNER, command))
    return children


@pytest.mark.parametrize("example", ["whisper-large-v3-telephony.yaml", "qwen2-audio-lora.yaml"])
def test_every_child_passes_kubernetes_validate(example):
    for child in all_children(spec_of(example)):
        kubernetes_validate.validate(child, K8S, strict=True)


def test_children_are_labelled_and_owned():
    for child in all_children(spec_of()):
        meta = child["metadata"]
        assert meta["labels"][LABEL_MANAGED_BY] == "marco-asr"
        assert meta["labels"][LABEL_ADAPTATION] == OWNER.name
        assert meta["labels"][LABEL_STAGE] in STAGES
        (ref,) = meta["ownerReferences"]
        assert (ref["kind"], ref["uid"], ref["controller"]) == ("AsrAdaptation", OWNER.uid, True)


def jobs_by_stage(spec):
    return {
        c["metadata"]["labels"][LABEL_STAGE]: c for c in all_children(spec) if c["kind"] == "Job"
    }


def test_only_torchrun_gets_an_unshared_rendezvous_store_for_each_restart_round():
    """torch's default shares one store across restart rounds, stale keys and all."""
    for stage, job in jobs_by_stage(spec_of()).items():
        (container,) = job["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        expected = "1" if stage == "train" else None
        assert env.get("TORCH_DISABLE_SHARE_RDZV_TCP_STORE") == expected, stage


def test_training_job_is_an_indexed_torchrun_with_rendezvous_on_pod_zero():
    spec = spec_of()
    job = jobs_by_stage(spec)["train"]["spec"]
    assert job["completionMode"] == "Indexed"
    assert job["completions"] == job["parallelism"] == spec.resources.nodes
    pod = job["template"]["spec"]
    assert pod["subdomain"] == "whisper-telephony-train"
    (container,) = pod["containers"]
    command = container["command"][-1]
    assert "torchrun" in command and "--nproc-per-node=4" in command
    assert "--rdzv-endpoint=whisper-telephony-train-0.whisper-telephony-train:29500" in command
    assert "--control-file /etc/marco/control/directive.json" in command
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
    control = next(v for v in pod["volumes"] if v["name"] == "control")
    assert control["configMap"]["name"] == "whisper-telephony-control"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["tolerations"][0] == {"key": "nvidia.com/gpu", "operator": "Exists",
                                     "effect": "NoSchedule"}  # fmt: skip


def test_pods_are_locked_down():
    for stage, job in jobs_by_stage(spec_of()).items():
        pod = job["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False, stage
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        container = pod["containers"][0]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"


@pytest.mark.parametrize("example", ["whisper-large-v3-telephony.yaml", "qwen2-audio-lora.yaml"])
def test_every_stage_pod_reowns_its_volumes_only_on_a_root_mismatch(example):
    """With fsGroup alone the kubelet walks and chowns a whole volume at every pod start:
    on a shared volume of checkpoints and models, each stage would wait on it."""
    spec = spec_of(example)
    jobs = jobs_by_stage(spec)
    assert set(jobs) == set(enabled_stages(spec)), "a Job per enabled stage"
    for stage, job in jobs.items():
        security = job["spec"]["template"]["spec"]["securityContext"]
        assert "fsGroup" in security, stage
        assert security["fsGroupChangePolicy"] == "OnRootMismatch", stage


def test_sharded_stages_are_indexed_and_cpu_stages_want_no_gpu():
    jobs = jobs_by_stage(spec_of())
    profile = jobs["profile"]["spec"]
    assert (profile["completions"], profile["completionMode"]) == (4, "Indexed")
    env = {e["name"]: e.get("value") for e in profile["template"]["spec"]["containers"][0]["env"]}
    assert env["MARCO_NUM_SHARDS"] == "4"
    assert (
        "nvidia.com/gpu" not in profile["template"]["spec"]["containers"][0]["resources"]["limits"]
    )
    assert "completionMode" not in jobs["baseline"]["spec"]


def test_stage_commands_chain_outputs_into_inputs():
    spec = spec_of()
    jobs = jobs_by_stage(spec)
    args = {stage: job["spec"]["template"]["spec"]["containers"][0]["command"]
            for stage, job in jobs.items()}  # fmt: skip
    out = "/output/marco-asr/whisper-telephony"
    assert args["filter"][:2] == ["marco-trainer", "filter"]
    assert "/data/commonvoice/en/train.jsonl" in args["filter"]
    augment = args["augment"]
    assert augment[augment.index("--profile") + 1] == f"{out}/profile"
    assert augment[augment.index("--manifest") + 1] == f"{out}/filter/kept.jsonl"
    train = args["train"][-1]
    assert f"--train-manifest {out}/filter/kept.jsonl --train-manifest {out}/augment" in train
    assert args["evaluate"][args["evaluate"].index("--model") + 1] == f"{out}/train/export"
    baseline = args["baseline"]
    assert baseline[baseline.index("--max-samples") + 1] == "200"


def test_llm_training_passes_lora_settings():
    spec = spec_of("qwen2-audio-lora.yaml")
    command = jobs_by_stage(spec)["train"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert (
        "--lora-r 16" in command[-1]
        and "--lora-target-modules q_proj,k_proj,v_proj,o_proj" in (command[-1])
    )
