"""Issue 14, point 2, against kmock's API emulator: an adaptation with pod template overrides
(an istio annotation and an API key from a Secret for every stage, an imagePullSecret, NCCL
settings for train alone) and the Jobs the running operator creates from it, read back
from the API as `kubectl get job -o yaml` would show them."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from marco_contract.formats import StageResult
from tests.crd_check import validate_against_crd

from .harness import API_VERSION, EmulatedCluster, JobController, wait_for
from .test_operator_kopf import NAME, make_spec

pytestmark = pytest.mark.timeout(60)

API_KEY = {
    "name": "WANDB_API_KEY",
    "valueFrom": {"secretKeyRef": {"name": "wandb", "key": "token"}},
}
OVERRIDES = [
    {
        "metadata": {"annotations": {"sidecar.istio.io/inject": "false"}},
        "spec": {
            "imagePullSecrets": [{"name": "registry"}],
            "containers": [{"name": "trainer", "env": [API_KEY]}],
        },
    },
    {
        "targetJobs": [{"name": "train"}],
        "metadata": {"labels": {"team": "speech"}},
        "spec": {
            "volumes": [{"name": "nccl-topo", "configMap": {"name": "nccl-topology"}}],
            "containers": [
                {
                    "name": "trainer",
                    "env": [{"name": "NCCL_TOPO_FILE", "value": "/opt/nccl/topo.xml"}],
                    "volumeMounts": [{"name": "nccl-topo", "mountPath": "/opt/nccl"}],
                }
            ],
        },
    },
]


def pod_of(job: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A Job's pod template metadata, pod spec and its one container."""
    template = job["spec"]["template"]
    (container,) = template["spec"]["containers"]
    return template["metadata"], template["spec"], container


def test_the_jobs_the_operator_creates_carry_the_overrides(
    cluster: EmulatedCluster, jobs: JobController, operator
) -> None:
    spec = make_spec(
        profile={"enabled": False},
        augmentation={"enabled": False},
        baseline={"enabled": False},
        evaluation={"enabled": False},
        podTemplateOverrides=OVERRIDES,
    )
    manifest = {
        "apiVersion": API_VERSION,
        "kind": "AsrAdaptation",
        "metadata": {"name": NAME, "namespace": "asr"},
        "spec": spec,
    }
    assert validate_against_crd(manifest) == []  # the API server would take it
    cluster.apply_adaptation(NAME, spec)

    # filter: the every-stage override, not train's.
    job = jobs.wait_job(NAME, "filter")
    kubernetes_validate.validate(job, "1.35.0", strict=True)
    meta, pod, container = pod_of(job)
    assert meta["annotations"] == {"sidecar.istio.io/inject": "false"}
    assert "team" not in meta["labels"]
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    env = {e["name"]: e for e in container["env"]}
    assert env["WANDB_API_KEY"] == API_KEY
    assert "NCCL_TOPO_FILE" not in env
    assert "nccl-topo" not in {v["name"] for v in pod["volumes"]}
    jobs.complete(job, StageResult(stage="filter", counts={"kept": 9}))

    # train: both, and the operator's own mounts and env beside them.
    job = jobs.wait_job(NAME, "train")
    kubernetes_validate.validate(job, "1.35.0", strict=True)
    meta, pod, container = pod_of(job)
    assert meta["annotations"] == {"sidecar.istio.io/inject": "false"}
    assert meta["labels"]["team"] == "speech"
    assert meta["labels"]["asr.marco.dev/stage"] == "train"
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    env = {e["name"]: e for e in container["env"]}
    assert env["WANDB_API_KEY"] == API_KEY
    assert env["NCCL_TOPO_FILE"] == {"name": "NCCL_TOPO_FILE", "value": "/opt/nccl/topo.xml"}
    assert env["MARCO_NUM_SHARDS"]["value"] == "1"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["nccl-topo"] == {"name": "nccl-topo", "configMap": {"name": "nccl-topology"}}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts["/opt/nccl"] == "nccl-topo"
    assert mounts["/etc/marco/control"] == "control"


def test_an_override_only_pydantic_refuses_marks_the_adaptation_invalid_and_makes_no_job(
    cluster: EmulatedCluster, operator
) -> None:
    """A mount of a volume no override gives: the CRD keeps it (it cannot say so), the
    operator refuses it before the first Job, naming the field."""
    spec = make_spec(
        podTemplateOverrides=[
            {"spec": {"containers": [{"name": "trainer", "volumeMounts": [
                {"name": "nowhere", "mountPath": "/x"}]}]}}
        ]
    )  # fmt: skip
    cluster.apply_adaptation(NAME, spec)
    status = wait_for(
        "phase Invalid", lambda: (s := cluster.status(NAME)).get("phase") == "Invalid" and s
    )
    assert status["message"].startswith(
        "spec.podTemplateOverrides: podTemplateOverrides[0].spec.containers[0].volumeMounts[0]"
        ".name 'nowhere' names no volume of the fetch pods"  # the first stage it reaches
    )
    assert cluster.jobs(NAME) == []
