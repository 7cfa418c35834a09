"""Gang scheduling of the multi-node train Job (spec.resources.gangScheduling): the PodGroup,
the pods' fields, where it is refused, and what a cluster without the PodGroup CRD says."""

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import ValidationError

from marco_contract.formats import Directive
from marco_operator.api import GANG_QUEUE_RULE, describe_error, parse_spec
from marco_operator.core import Observed, Outcome, Queueing, StageStart, reconcile
from marco_operator.kube import KubeError
from marco_operator.plan import stage_command
from marco_operator.reconciler import (
    GangSchedulerMissing,
    _create,
    children,
    describe_failure,
)
from marco_operator.resources import Owner, cluster_layout, stage_job
from tests.crd_check import validate_against_crd

ROOT = Path(__file__).resolve().parents[3]
OWNER = Owner(name="whisper-telephony", namespace="asr", uid="0f9d2c51-aaaa-bbbb-cccc-1234567890ab")
K8S = "1.35.0"
OWNER_REF = {
    "apiVersion": "asr.marco.dev/v1alpha1",
    "kind": "AsrAdaptation",
    "name": "whisper-telephony",
    "uid": "0f9d2c51-aaaa-bbbb-cccc-1234567890ab",
    "controller": True,
    "blockOwnerDeletion": True,
}
TRAIN_LABELS = {
    "app.kubernetes.io/managed-by": "marco-asr",
    "asr.marco.dev/adaptation": "whisper-telephony",
    "asr.marco.dev/stage": "train",
}


def example() -> dict[str, Any]:
    path = ROOT / "examples" / "whisper-large-v3-telephony.yaml"
    return yaml.safe_load(path.read_text())


def spec_with(**resources: Any) -> dict[str, Any]:
    spec = example()["spec"]
    # The example's own overlays (annotations, labels) are not what is checked here.
    spec.pop("podTemplateOverrides", None)
    spec["resources"] = {**spec.get("resources", {}), **resources}
    return spec


def train_job(raw: dict[str, Any], stage: str = "train") -> dict[str, Any]:
    spec = parse_spec(raw)
    command = stage_command(
        spec,
        stage,
        cluster_layout(spec, OWNER.name),
        name=OWNER.name,
        family=spec.model.family,
        learning_rate=1e-6,
    )
    return stage_job(spec, OWNER, command)


def train_children(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """What the reconciler creates for a train start, in order."""
    spec = parse_spec(raw)
    command = stage_command(
        spec,
        "train",
        cluster_layout(spec, OWNER.name),
        name=OWNER.name,
        family=spec.model.family,
        learning_rate=1e-6,
    )
    start = StageStart(
        stage="train", job_name=f"{OWNER.name}-train", command=command, nodes=2, steered=True
    )
    outcome = Outcome(
        status={}, spec=spec, start=[start], directive=Directive(cycle=0, learning_rate=1e-6)
    )
    return children(outcome, OWNER, token="t")


def test_a_volcano_gang_is_a_pod_group_of_every_node_made_before_the_job() -> None:
    raw = spec_with(nodes=3, priorityClassName="research", gangScheduling={"scheduler": "volcano"})
    made = train_children(raw)
    assert [m["kind"] for m in made] == ["ConfigMap", "Secret", "Service", "PodGroup", "Job"]
    assert made[3] == {
        "apiVersion": "scheduling.volcano.sh/v1beta1",
        "kind": "PodGroup",
        "metadata": {
            "name": "whisper-telephony-train",
            "namespace": "asr",
            "labels": TRAIN_LABELS,
            "ownerReferences": [OWNER_REF],
        },
        "spec": {"minMember": 3, "priorityClassName": "research"},
    }
    pod = made[4]["spec"]["template"]
    assert pod["spec"]["schedulerName"] == "volcano"
    assert pod["metadata"]["annotations"] == {
        "scheduling.k8s.io/group-name": "whisper-telephony-train"
    }
    assert pod["metadata"]["labels"] == TRAIN_LABELS


def test_a_coscheduling_gang_labels_its_pods_for_the_plugin_s_scheduler() -> None:
    raw = spec_with(nodes=2, gangScheduling={"scheduler": "coscheduling"})
    made = train_children(raw)
    assert [m["kind"] for m in made] == ["ConfigMap", "Secret", "Service", "PodGroup", "Job"]
    assert made[3] == {
        "apiVersion": "scheduling.x-k8s.io/v1alpha1",
        "kind": "PodGroup",
        "metadata": {
            "name": "whisper-telephony-train",
            "namespace": "asr",
            "labels": TRAIN_LABELS,
            "ownerReferences": [OWNER_REF],
        },
        "spec": {"minMember": 2},
    }
    pod = made[4]["spec"]["template"]
    assert pod["spec"]["schedulerName"] == "scheduler-plugins-scheduler"
    assert pod["metadata"]["labels"] == {
        **TRAIN_LABELS,
        "scheduling.x-k8s.io/pod-group": "whisper-telephony-train",
    }
    assert "annotations" not in pod["metadata"]


def test_the_scheduler_name_is_the_spec_s_when_given() -> None:
    gang = {"scheduler": "coscheduling", "schedulerName": "gang-scheduler"}
    job = train_job(spec_with(nodes=2, gangScheduling=gang))
    assert job["spec"]["template"]["spec"]["schedulerName"] == "gang-scheduler"


@pytest.mark.parametrize("scheduler", ["volcano", "coscheduling"])
def test_a_gang_scheduled_job_passes_strict_kubernetes_validate(scheduler: str) -> None:
    job = train_job(spec_with(nodes=4, gangScheduling={"scheduler": scheduler}))
    kubernetes_validate.validate(job, K8S, strict=True)


def test_one_node_and_the_other_stages_are_never_gang_scheduled() -> None:
    gang = {"scheduler": "volcano"}
    one_node = spec_with(nodes=1, gangScheduling=gang)
    assert [m["kind"] for m in train_children(one_node)] == [
        "ConfigMap",
        "Secret",
        "Service",
        "Job",
    ]
    assert "schedulerName" not in train_job(one_node)["spec"]["template"]["spec"]
    # Shards work alone: a sharded augment Job's pods keep the default scheduler.
    raw = spec_with(nodes=2, gangScheduling=gang)
    raw["augmentation"] = {**raw.get("augmentation", {}), "shards": 4}
    augment = train_job(raw, "augment")
    assert augment["spec"]["completions"] == 4
    assert "schedulerName" not in augment["spec"]["template"]["spec"]
    assert "annotations" not in augment["spec"]["template"]["metadata"]


def test_without_gang_scheduling_the_train_pods_are_as_before() -> None:
    job = train_job(spec_with(nodes=2))
    assert "schedulerName" not in job["spec"]["template"]["spec"]
    assert job["spec"]["template"]["metadata"] == {"labels": TRAIN_LABELS}


def test_an_override_cannot_take_a_pod_out_of_its_gang() -> None:
    raw = spec_with(nodes=2, gangScheduling={"scheduler": "coscheduling"})
    raw["podTemplateOverrides"] = [
        {"metadata": {"labels": {"scheduling.x-k8s.io/pod-group": "elsewhere", "team": "a"}}}
    ]
    labels = train_job(raw)["spec"]["template"]["metadata"]["labels"]
    assert labels["scheduling.x-k8s.io/pod-group"] == "whisper-telephony-train"
    assert labels["team"] == "a"


def test_an_unknown_scheduler_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError) as error:
        parse_spec(spec_with(nodes=2, gangScheduling={"scheduler": "yunikorn"}))
    assert describe_error(error.value).startswith("spec.resources.gangScheduling.scheduler: ")


def test_gang_scheduling_with_a_spec_queue_is_refused_by_cel_and_pydantic() -> None:
    obj = example()
    obj["spec"] = copy.deepcopy(obj["spec"])
    obj["spec"]["queueName"] = "team-gpus"
    obj["spec"].setdefault("resources", {})["gangScheduling"] = {"scheduler": "volcano"}
    failures = validate_against_crd(obj)
    assert any(GANG_QUEUE_RULE in failure for failure in failures), failures
    with pytest.raises(ValidationError) as error:
        parse_spec(obj["spec"])
    said = describe_error(error.value)
    assert said == f"spec: {GANG_QUEUE_RULE} (queue 'team-gpus', spec.queueName)"


def body(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "asr.marco.dev/v1alpha1",
        "kind": "AsrAdaptation",
        "metadata": {"name": "demo", "namespace": "ns", "uid": "uid-1", "generation": 1},
        "spec": spec,
    }


def test_gang_scheduling_under_the_operator_s_default_queue_is_invalid() -> None:
    raw = spec_with(nodes=2, gangScheduling={"scheduler": "volcano"})
    outcome = reconcile(body(raw), Observed(now=1.0), queueing=Queueing(default_name="team-a"))
    assert outcome.status["phase"] == "Invalid"
    assert outcome.status["message"] == (
        f"{GANG_QUEUE_RULE} (queue 'team-a', the operator's default queue)"
    )
    assert outcome.start == []
    # Without a default queue the same spec starts its first stage.
    outcome = reconcile(body(raw), Observed(now=1.0), queueing=Queueing())
    assert outcome.status["phase"] != "Invalid" and len(outcome.start) == 1


class NoPodGroups:
    """The API server of a cluster without the PodGroup CRD: its collection is a 404."""

    def __init__(self) -> None:
        self.posted: list[str] = []

    def create(self, manifest: dict[str, Any]) -> bool:
        path = f"/apis/{manifest['apiVersion']}/namespaces/asr/podgroups"
        self.posted.append(path)
        raise KubeError("POST", path, 404, "404 page not found")


def test_a_missing_pod_group_crd_is_said_as_such_and_the_job_is_not_created() -> None:
    made = train_children(spec_with(nodes=2, gangScheduling={"scheduler": "volcano"}))
    kube = NoPodGroups()
    with pytest.raises(GangSchedulerMissing) as raised:
        _create(kube, made[3], OWNER)  # type: ignore[arg-type]
    assert kube.posted == ["/apis/scheduling.volcano.sh/v1beta1/namespaces/asr/podgroups"]
    failure = describe_failure(raised.value)
    assert failure.reason == "GangSchedulerMissing"
    assert failure.message == (
        "creating PodGroup whisper-telephony-train: the cluster serves no "
        "scheduling.volcano.sh/v1beta1 PodGroups (is the gang scheduler of "
        "spec.resources.gangScheduling.scheduler installed?); install it, or remove "
        "spec.resources.gangScheduling"
    )
