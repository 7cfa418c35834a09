"""Issue 14, point 2: spec.podTemplateOverrides merged into the stage pods (overrides.py),
as Kubeflow Trainer merges a TrainJob's podTemplateOverrides: labels, annotations and
nodeSelector by key, volumes, env and imagePullSecrets by name, volumeMounts by mountPath,
serviceAccountName and affinity replaced, later entries winning; tolerations and envFrom
appended. Every expected pod template below is written out by hand."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, get_args

import kubernetes_validate
import pytest
import yaml

from marco_contract.layout import STAGES
from marco_operator.api import (
    OPERATOR_ENV,
    OPERATOR_ENV_PREFIX,
    OPERATOR_VOLUMES,
    AsrAdaptationSpec,
    PodTemplateOverride,
    StageName,
    parse_spec,
)
from marco_operator.overrides import apply_override, apply_overrides
from marco_operator.plan import enabled_stages, stage_command, trial_command
from marco_operator.resources import Owner, cluster_layout, stage_job

ROOT = Path(__file__).resolve().parents[3]
OWNER = Owner(name="whisper-telephony", namespace="asr", uid="0f9d2c51-aaaa-bbbb-cccc-1234567890ab")
K8S = "1.35.0"


def base_template() -> dict[str, Any]:
    """A stage pod template as resources.py makes one, cut down to what overrides touch."""
    return {
        "metadata": {"labels": {"asr.marco.dev/stage": "train"}},
        "spec": {
            "nodeSelector": {"pool": "gpu"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
            "containers": [
                {
                    "name": "trainer",
                    "env": [
                        {"name": "MARCO_NUM_SHARDS", "value": "1"},
                        {"name": "NCCL_DEBUG", "value": "INFO"},
                    ],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                }
            ],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "asr-data"}}],
        },
    }


def overrides(*entries: dict[str, Any]) -> list[PodTemplateOverride]:
    return [PodTemplateOverride.model_validate(e, strict=True) for e in entries]


def trainer_env(*env: dict[str, Any]) -> dict[str, Any]:
    return {"containers": [{"name": "trainer", "env": list(env)}]}


def test_env_is_merged_by_name_the_override_replacing_the_entry_it_names():
    (override,) = overrides(
        {"spec": trainer_env({"name": "NCCL_DEBUG", "value": "WARN"}, {"name": "A", "value": "1"})}
    )
    merged = apply_override(base_template(), override)
    assert merged["spec"]["containers"][0]["env"] == [
        {"name": "MARCO_NUM_SHARDS", "value": "1"},
        {"name": "NCCL_DEBUG", "value": "WARN"},
        {"name": "A", "value": "1"},
    ]
    # Nothing else moved.
    expected = base_template()
    expected["spec"]["containers"][0]["env"] = merged["spec"]["containers"][0]["env"]
    assert merged == expected


def test_a_new_volume_and_its_mount_are_added_beside_the_operators():
    (override,) = overrides(
        {
            "spec": {
                "volumes": [{"name": "nccl-topo", "configMap": {"name": "topology"}}],
                "containers": [
                    {
                        "name": "trainer",
                        "volumeMounts": [
                            {"name": "nccl-topo", "mountPath": "/opt/nccl", "readOnly": True}
                        ],
                    }
                ],
            }
        }
    )
    merged = apply_override(base_template(), override)
    expected = base_template()
    expected["spec"]["volumes"] = [
        {"name": "data", "persistentVolumeClaim": {"claimName": "asr-data"}},
        {"name": "nccl-topo", "configMap": {"name": "topology"}},
    ]
    expected["spec"]["containers"][0]["volumeMounts"] = [
        {"name": "data", "mountPath": "/data"},
        {"name": "nccl-topo", "mountPath": "/opt/nccl", "readOnly": True},
    ]
    assert merged == expected


def test_labels_and_annotations_are_merged_key_by_key_later_entries_winning():
    merged = apply_overrides(
        base_template(),
        overrides(
            {"metadata": {"annotations": {"sidecar.istio.io/inject": "false", "team": "a"}}},
            {"metadata": {"labels": {"team": "asr"}, "annotations": {"team": "b"}}},
        ),
        "train",
    )
    assert merged["metadata"] == {
        "labels": {"asr.marco.dev/stage": "train", "team": "asr"},
        "annotations": {"sidecar.istio.io/inject": "false", "team": "b"},
    }


def test_later_overrides_win_and_their_order_decides():
    first = {
        "spec": {
            "serviceAccountName": "first",
            "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
            **trainer_env({"name": "HF_HUB_ENABLE_HF_TRANSFER", "value": "0"}),
        }
    }
    second = {
        "spec": {
            "serviceAccountName": "second",
            "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": []}},
            **trainer_env({"name": "HF_HUB_ENABLE_HF_TRANSFER", "value": "1"}),
        }
    }
    forward = apply_overrides(base_template(), overrides(first, second), "train")["spec"]
    backward = apply_overrides(base_template(), overrides(second, first), "train")["spec"]
    assert forward["serviceAccountName"] == "second"
    assert backward["serviceAccountName"] == "first"
    # affinity is replaced whole: nothing of the earlier one is left.
    assert forward["affinity"] == {
        "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": []}
    }
    assert backward["affinity"] == {
        "nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}
    }
    assert forward["containers"][0]["env"][-1] == {
        "name": "HF_HUB_ENABLE_HF_TRANSFER",
        "value": "1",
    }
    assert backward["containers"][0]["env"][-1] == {
        "name": "HF_HUB_ENABLE_HF_TRANSFER",
        "value": "0",
    }


def test_tolerations_and_env_from_are_appended_node_selector_and_pull_secrets_merged():
    merged = apply_overrides(
        base_template(),
        overrides(
            {
                "spec": {
                    "nodeSelector": {"zone": "b"},
                    # The first is the one resources.tolerations already gives: not repeated.
                    "tolerations": [
                        {"key": "nvidia.com/gpu", "operator": "Exists"},
                        {
                            "key": "spot",
                            "operator": "Equal",
                            "value": "true",
                            "effect": "NoSchedule",
                        },
                    ],
                    "imagePullSecrets": [{"name": "registry"}],
                    "containers": [
                        {"name": "trainer", "envFrom": [{"secretRef": {"name": "wandb"}}]}
                    ],
                }
            },
            {
                "spec": {
                    "nodeSelector": {"pool": "h100"},
                    # Already there twice over: appended to, not replaced by.
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
                    "imagePullSecrets": [{"name": "registry"}, {"name": "mirror"}],
                    "containers": [
                        {
                            "name": "trainer",
                            "envFrom": [{"prefix": "S3_", "configMapRef": {"name": "bucket"}}],
                        }
                    ],
                }
            },
        ),
        "train",
    )
    pod = merged["spec"]
    assert pod["nodeSelector"] == {"pool": "h100", "zone": "b"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists"},
        {"key": "spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"},
    ]
    assert pod["imagePullSecrets"] == [{"name": "registry"}, {"name": "mirror"}]
    assert pod["containers"][0]["envFrom"] == [
        {"secretRef": {"name": "wandb"}},
        {"prefix": "S3_", "configMapRef": {"name": "bucket"}},
    ]


def test_a_mount_at_a_path_already_mounted_by_an_earlier_override_replaces_it():
    volume = {"name": "scratch", "emptyDir": {}}
    merged = apply_overrides(
        base_template(),
        overrides(
            {"spec": {"volumes": [volume], "containers": [
                {"name": "trainer", "volumeMounts": [{"name": "scratch", "mountPath": "/x"}]}]}},
            {"spec": {"containers": [{"name": "trainer", "volumeMounts": [
                {"name": "scratch", "mountPath": "/x", "readOnly": True}]}]}},
        ),
        "train",
    )  # fmt: skip
    assert merged["spec"]["containers"][0]["volumeMounts"] == [
        {"name": "data", "mountPath": "/data"},
        {"name": "scratch", "mountPath": "/x", "readOnly": True},
    ]


def test_an_override_reaches_only_the_stages_it_targets():
    entries = overrides(
        {"metadata": {"annotations": {"everywhere": "yes"}}},
        {"targetJobs": [{"name": "train"}], "metadata": {"annotations": {"train-only": "yes"}}},
    )
    on_train = apply_overrides(base_template(), entries, "train")
    on_filter = apply_overrides(base_template(), entries, "filter")
    assert on_train["metadata"]["annotations"] == {"everywhere": "yes", "train-only": "yes"}
    assert on_filter["metadata"]["annotations"] == {"everywhere": "yes"}


def test_the_template_given_is_left_as_it_was_and_no_override_changes_nothing():
    template = base_template()
    apply_overrides(template, overrides({"spec": trainer_env({"name": "A", "value": "1"})}), "x")
    assert template == base_template()
    assert apply_overrides(base_template(), None, "train") == base_template()
    assert apply_overrides(base_template(), [], "train") == base_template()


def test_the_stages_an_override_can_target_are_the_pipelines():
    assert get_args(StageName) == STAGES


# ----------------------------------------------------------------- through stage_job


def example() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "examples" / "whisper-large-v3-telephony.yaml").read_text())


def stage_jobs(spec: AsrAdaptationSpec) -> dict[str, list[dict[str, Any]]]:
    """Every Job of the spec's stages, each trial's Job for trials."""
    layout = cluster_layout(spec, OWNER.name)
    jobs: dict[str, list[dict[str, Any]]] = {}
    for stage in enabled_stages(spec):
        if stage == "trials":
            commands = [
                trial_command(spec, layout, i, 1e-6, name=OWNER.name, family="encoder-decoder")
                for i in range(spec.trials.count)
            ]
        else:
            commands = [
                stage_command(spec, stage, layout, name=OWNER.name, family="encoder-decoder",
                              learning_rate=1e-6)
            ]  # fmt: skip
        jobs[stage] = [stage_job(spec, OWNER, command) for command in commands]
    return jobs


EVERYTHING = [
    {
        "metadata": {
            "labels": {"team": "asr"},
            "annotations": {"sidecar.istio.io/inject": "false"},
        },
        "spec": {
            "imagePullSecrets": [{"name": "registry"}],
            "volumes": [
                {"name": "nccl-topo", "configMap": {"name": "topology", "defaultMode": 0o444}},
                {
                    "name": "models",
                    "persistentVolumeClaim": {"claimName": "models", "readOnly": True},
                },
            ],
            "containers": [
                {
                    "name": "trainer",
                    "env": [
                        {
                            "name": "WANDB_API_KEY",
                            "valueFrom": {"secretKeyRef": {"name": "wandb", "key": "token"}},
                        },
                        {
                            "name": "POD_IP",
                            "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
                        },
                    ],
                    "envFrom": [{"configMapRef": {"name": "nccl", "optional": True}}],
                    "volumeMounts": [
                        {"name": "nccl-topo", "mountPath": "/opt/nccl", "readOnly": True},
                        {"name": "models", "mountPath": "/models", "subPath": "whisper"},
                    ],
                }
            ],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {
                                        "key": "node.kubernetes.io/instance-type",
                                        "operator": "In",
                                        "values": ["p5.48xlarge"],
                                    }
                                ]
                            }
                        ]
                    }
                }
            },
            "tolerations": [{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}],
            "nodeSelector": {"zone": "b"},
            "serviceAccountName": "trainer",
        },
    },
    {
        "targetJobs": [{"name": "train"}, {"name": "trials"}],
        "spec": {
            "containers": [{"name": "trainer", "env": [{"name": "NCCL_DEBUG", "value": "WARN"}]}]
        },
    },
]


def spec_with(
    entries: list[dict[str, Any]], trials: bool = True, push: bool = True
) -> AsrAdaptationSpec:
    """The example with `entries` as its overrides; with a push (and trials) every stage runs."""
    obj = example()
    obj["spec"]["podTemplateOverrides"] = entries
    obj["spec"]["trials"] = {"enabled": trials, "count": 2}
    if push:
        obj["spec"].setdefault("output", {})["push"] = {"uri": "hf://acme/whisper-telephony"}
    return parse_spec(obj["spec"])


def test_every_job_with_every_kind_of_override_passes_kubernetes_validate():
    jobs = stage_jobs(spec_with(EVERYTHING))
    assert set(jobs) == set(STAGES) and len(jobs["trials"]) == 2
    for stage_list in jobs.values():
        for job in stage_list:
            kubernetes_validate.validate(job, K8S, strict=True)


def test_every_stage_pod_trials_and_torchrun_included_carries_the_overlay():
    spec = spec_with(EVERYTHING)
    for stage, stage_list in stage_jobs(spec).items():
        for job in stage_list:
            template = job["spec"]["template"]
            pod = template["spec"]
            (container,) = pod["containers"]
            env = {e["name"]: e for e in container["env"]}
            assert template["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}
            assert template["metadata"]["labels"]["team"] == "asr"
            assert template["metadata"]["labels"]["asr.marco.dev/stage"] == stage
            assert env["WANDB_API_KEY"] == {
                "name": "WANDB_API_KEY",
                "valueFrom": {"secretKeyRef": {"name": "wandb", "key": "token"}},
            }
            assert ("NCCL_DEBUG" in env) == (stage in ("train", "trials")), stage
            assert pod["imagePullSecrets"] == [{"name": "registry"}]
            assert pod["serviceAccountName"] == "trainer"
            # The example's resources.nodeSelector and tolerations, then the override's.
            assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
                                           "zone": "b"}  # fmt: skip
            assert pod["tolerations"] == [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                {"key": "spot", "operator": "Exists", "effect": "NoSchedule"},
            ]
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts["/opt/nccl"] == "nccl-topo" and mounts["/models"] == "models"
            assert mounts["/data"] == "data"  # the operator's own, untouched
    train = stage_jobs(spec)["train"][0]["spec"]
    # One template for every torchrun pod of the Indexed Job.
    assert train["completionMode"] == "Indexed" and "torchrun" in str(
        train["template"]["spec"]["containers"][0]["command"]
    )


def test_without_overrides_the_jobs_are_what_they_were():
    obj = example()
    del obj["spec"]["podTemplateOverrides"]
    plain = stage_jobs(parse_spec(obj["spec"]))
    empty = stage_jobs(spec_with([], trials=False, push=False))
    assert plain == empty
    for stage_list in plain.values():
        for job in stage_list:
            assert "annotations" not in job["spec"]["template"]["metadata"]
            assert "imagePullSecrets" not in job["spec"]["template"]["spec"]


def test_what_an_override_may_not_touch_covers_all_the_operator_sets():
    """Every volume and variable resources.py gives a stage pod is one an override is refused
    (api.OPERATOR_VOLUMES, OPERATOR_ENV, MARCO_*): a new one added there without reserving
    it fails here."""
    obj = example()
    del obj["spec"]["podTemplateOverrides"]
    obj["spec"]["trials"] = {"enabled": True}
    for stage_list in stage_jobs(parse_spec(obj["spec"])).values():
        for job in stage_list:
            pod = job["spec"]["template"]["spec"]
            for volume in pod["volumes"]:
                assert volume["name"] in OPERATOR_VOLUMES
            for container in pod["containers"]:
                for mount in container["volumeMounts"]:
                    assert mount["name"] in OPERATOR_VOLUMES
                for env in container["env"]:
                    name = env["name"]
                    assert name in OPERATOR_ENV or name.startswith(OPERATOR_ENV_PREFIX), name


def test_a_spec_s_overrides_are_read_back_as_written():
    spec = spec_with(copy.deepcopy(EVERYTHING))
    dumped = [
        o.model_dump(by_alias=True, exclude_none=True, mode="json")
        for o in spec.pod_template_overrides or []
    ]
    assert dumped == EVERYTHING


@pytest.mark.parametrize("stage", STAGES)
def test_a_per_stage_override_hits_that_stage_alone(stage):
    entries = [{"targetJobs": [{"name": stage}], "metadata": {"annotations": {"only": stage}}}]
    for other, stage_list in stage_jobs(spec_with(entries)).items():
        for job in stage_list:
            annotations = job["spec"]["template"]["metadata"].get("annotations")
            assert annotations == ({"only": stage} if other == stage else None), other
