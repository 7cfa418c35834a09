"""The shared volume of a cluster run (issue 14, point 3a): required on a cluster by the CRD
(CEL, judged by tests/crd_check.py) and by the operator (core), not by `marco run`; and
ReadWriteMany wherever pods mount it at once, decided from the claims the driver read.

The expectations are written out here: which specs run pods at once, which access modes
serve them, and the words a user reads."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from marco_contract.layout import Layout
from marco_operator.api import describe_error, parse_spec
from marco_operator.core import Observed, reconcile
from marco_operator.local import LocalRun
from marco_operator.plan import PHASE_OF_STAGE, enabled_stages, stage_command
from marco_operator.resources import Owner, cluster_layout, stage_job
from marco_operator.storage import Claim, claim_of, claim_refusal
from tests.crd_check import validate_against_crd

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = yaml.safe_load((ROOT / "examples" / "whisper-large-v3-telephony.yaml").read_text())
REQUIRED = "required on a cluster: every stage pod mounts this PersistentVolumeClaim"
RWO, RWOP, RWX, ROX = "ReadWriteOnce", "ReadWriteOncePod", "ReadWriteMany", "ReadOnlyMany"
#: The example's first stage (fetch: its model is a hub id) and the phase it leads to.
FIRST = enabled_stages(parse_spec(EXAMPLE["spec"]))[0]
FIRST_PHASE = PHASE_OF_STAGE[FIRST]


def example(**sections: dict[str, Any]) -> dict[str, Any]:
    """The Whisper example (claim asr-data; profile shards 8, augmentation shards 4), with
    its sections' fields replaced by `sections`."""
    obj = copy.deepcopy(EXAMPLE)
    for section, values in sections.items():
        obj["spec"].setdefault(section, {}).update(values)
    obj["metadata"].update(namespace="asr", uid="uid-1", generation=1)
    return obj


def without_claim(obj: dict[str, Any]) -> dict[str, Any]:
    del obj["spec"]["data"]["volumeClaim"]
    return obj


# --- required on a cluster -----------------------------------------------------------------


def test_the_crd_refuses_a_spec_without_a_claim_naming_the_field():
    assert validate_against_crd(example()) == []
    (failure,) = validate_against_crd(without_claim(example()))
    assert failure.startswith(f".spec.data.volumeClaim: {REQUIRED}")
    assert "ReadWriteMany" in failure and "--data-dir" in failure


@pytest.mark.parametrize("name", ["", "Asr_Data", "-data", "data-", "a b", "x" * 254])
def test_a_claim_name_kubernetes_would_refuse_is_refused_by_both(name):
    for section in ("data", "output"):
        obj = example(**{section: {"volumeClaim": name}})
        failures = validate_against_crd(obj)
        assert any(f.startswith(f"spec.{section}.volumeClaim: ") for f in failures), failures
        with pytest.raises(ValidationError) as refused:
            parse_spec(obj["spec"])
        assert describe_error(refused.value).startswith(f"spec.{section}.volumeClaim: ")


@pytest.mark.parametrize("name", ["asr-data", "a", "data.v2", "0-cache"])
def test_a_dns_subdomain_claim_name_is_accepted_by_both(name):
    obj = example(data={"volumeClaim": name})
    assert validate_against_crd(obj) == []
    assert parse_spec(obj["spec"]).data.volume_claim == name


@pytest.mark.parametrize("claim", ["absent", None])
def test_the_operator_refuses_a_spec_without_a_claim_as_invalid_with_an_event(claim):
    """A cluster whose API server skipped the CEL rule: core says the same words. An
    explicit null too (the field is nullable in the schema; CEL's has() may see it set)."""
    obj = without_claim(example()) if claim == "absent" else example(data={"volumeClaim": None})
    outcome = reconcile(obj, Observed(now=1.0))
    status = outcome.status
    assert outcome.start == [] and status["phase"] == "Invalid"
    assert status["message"].startswith(f"spec.data.volumeClaim: {REQUIRED}")
    (ready,) = [c for c in status["conditions"] if c["type"] == "Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    said = [(e.type, e.reason, e.message) for e in outcome.events if e.reason == "InvalidSpec"]
    assert said == [("Warning", "InvalidSpec", status["message"])]


def test_marco_run_takes_a_spec_without_a_claim(tmp_path):
    """The local driver maps the volumes to folders: no claim, no refusal, a stage starts."""
    manifest = without_claim(example())
    run = LocalRun(copy.deepcopy(manifest), data_dir=tmp_path, output_dir=tmp_path / "out")
    outcome = reconcile(run.body({}), Observed(now=1.0), layout=run.layout)
    assert [start.stage for start in outcome.start] == [FIRST]
    assert outcome.status["phase"] == FIRST_PHASE


def test_no_cluster_job_is_built_without_the_shared_volume():
    """resources.py has no emptyDir stand-in for the outputs any more: every stage pod mounts
    the claim, and a spec without one cannot become a Job at all."""
    spec = parse_spec(example()["spec"])
    owner = Owner("whisper-telephony", "asr", "uid-1")
    layout = cluster_layout(spec, owner.name)
    command = stage_command(spec, "filter", layout, name=owner.name, family="encoder-decoder")
    pod = stage_job(spec, owner, command)["spec"]["template"]["spec"]
    claims = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert claims == [{"name": "data", "persistentVolumeClaim": {"claimName": "asr-data"}}]
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["/data"] == "data" and mounts["/output"] == "data"
    bare = parse_spec(without_claim(example())["spec"])
    with pytest.raises(ValueError, match=r"^spec\.data\.volumeClaim: required on a cluster"):
        stage_job(bare, owner, command)


def test_a_separate_output_claim_is_mounted_at_the_output_path():
    spec = parse_spec(example(output={"volumeClaim": "results"})["spec"])
    owner = Owner("whisper-telephony", "asr", "uid-1")
    command = stage_command(
        spec, "filter", cluster_layout(spec, owner.name), name=owner.name, family="auto"
    )
    pod = stage_job(spec, owner, command)["spec"]["template"]["spec"]
    by_name = {v["name"]: v.get("persistentVolumeClaim") for v in pod["volumes"]}
    assert by_name["data"] == {"claimName": "asr-data"}
    assert by_name["output"] == {"claimName": "results"}
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["/data"] == "data" and mounts["/output"] == "output"


# --- ReadWriteMany where pods run at once ---------------------------------------------------

#: One shard for both sharded stages, no trials, one node: the example's pods one by one.
SERIAL = {"profile": {"shards": 1}, "augmentation": {"shards": 1}, "resources": {"nodes": 1}}

# (what changes from SERIAL, the claim's modes, refused?), written out by hand.
TABLE = [
    ({}, (RWO,), False),
    ({}, (RWOP,), False),
    ({}, (RWX,), False),
    ({"resources": {"nodes": 2}}, (RWO,), True),
    ({"resources": {"nodes": 2}}, (RWOP,), True),
    ({"resources": {"nodes": 2}}, (RWO, RWX), False),
    ({"resources": {"nodes": 2}}, (ROX,), True),
    ({"resources": {"gpusPerNode": 8}}, (RWO,), False),  # one pod, eight GPUs
    ({"profile": {"shards": 3}}, (RWO,), True),
    ({"profile": {"shards": 3, "enabled": False}, "augmentation": {"preset": "telephony"}},
     (RWO,), False),  # a sharded stage that does not run
    ({"augmentation": {"shards": 2}}, (RWOP,), True),
    ({"augmentation": {"shards": 2, "enabled": False}}, (RWO,), False),
    ({"trials": {"enabled": True}}, (RWO,), True),  # three trial Jobs side by side
    ({"trials": {"enabled": True, "learningRates": [1e-6]}}, (RWO,), False),  # one trial
    ({"trials": {"enabled": True, "learningRates": [1e-6, 1e-5]}}, (RWO,), True),
    ({"trials": {"enabled": True}}, (RWX,), False),
]  # fmt: skip


def _spec(changes: dict[str, dict[str, Any]]):
    sections = copy.deepcopy(SERIAL)
    for section, values in changes.items():
        sections.setdefault(section, {}).update(values)
    return parse_spec(example(**sections)["spec"])


@pytest.mark.parametrize(("changes", "modes", "refused"), TABLE)
def test_the_read_write_many_decision(changes, modes, refused):
    spec = _spec(changes)
    claims = {"asr-data": Claim("asr-data", found=True, access_modes=modes)}
    refusal = claim_refusal(spec, claims)
    assert (refusal is not None) == refused, refusal
    if refused:
        assert refusal is not None
        reason, message = refusal
        assert reason == "VolumeNotShared"
        assert message.startswith(
            f"spec.data.volumeClaim 'asr-data' has access modes {', '.join(modes)}: "
        )
        assert "ReadWriteMany" in message
        if RWOP in modes:
            assert "one pod at a time" in message and "unschedulable" in message
        else:
            assert "one node at a time" in message and "Multi-Attach" in message


def test_the_refusal_names_every_reason_and_what_to_set():
    spec = _spec({"resources": {"nodes": 4}, "augmentation": {"shards": 2}})
    _, message = claim_refusal(spec, {"asr-data": Claim("asr-data", True, (RWOP,))})  # type: ignore[misc]
    assert "it mounts on one pod at a time" in message
    assert "spec.resources.nodes is 4 (one pod per node); spec.augmentation.shards is 2" in message
    assert message.endswith("or set spec.resources.nodes 1 and spec.augmentation.shards 1")


def test_each_claim_is_judged_and_the_output_one_named_by_its_field():
    spec = _spec({"resources": {"nodes": 2}})
    spec = parse_spec({**spec.model_dump(by_alias=True, exclude_none=True),
                       "output": {"volumeClaim": "results"}})  # fmt: skip
    claims = {
        "asr-data": Claim("asr-data", True, (RWX,)),
        "results": Claim("results", True, (RWO,)),
    }
    reason, message = claim_refusal(spec, claims)  # type: ignore[misc]
    assert reason == "VolumeNotShared"
    assert message.startswith("spec.output.volumeClaim 'results' has access modes ReadWriteOnce")
    claims["results"] = Claim("results", True, (RWX,))
    assert claim_refusal(spec, claims) is None


def test_a_missing_claim_comes_first_whatever_the_concurrency():
    spec = _spec({})
    reason, message = claim_refusal(spec, {"asr-data": Claim("asr-data", found=False)})  # type: ignore[misc]
    assert reason == "VolumeNotFound"
    assert message.startswith("PersistentVolumeClaim 'asr-data' (spec.data.volumeClaim) not found")


def test_a_claim_is_judged_by_its_volume_once_bound_else_by_what_it_asks():
    asked = {"spec": {"accessModes": [RWO]}, "status": {"phase": "Pending"}}
    assert claim_of("c", asked) == Claim("c", True, (RWO,))
    bound = {
        "spec": {"accessModes": [RWO]},
        "status": {"phase": "Bound", "accessModes": [RWO, RWX]},
    }
    assert claim_of("c", bound) == Claim("c", True, (RWO, RWX))
    assert claim_of("c", None) == Claim("c", False, ())


# --- in core: before the first Job, and only then ---------------------------------------------


def test_core_refuses_an_unshared_claim_before_any_job_and_says_it_once():
    obj = example(resources={"nodes": 2})
    observed = Observed(now=1.0, claims={"asr-data": Claim("asr-data", True, (RWO,))})
    outcome = reconcile(copy.deepcopy(obj), observed)
    assert outcome.start == []
    status = outcome.status
    assert status["phase"] == "Invalid" and status.get("startedGeneration") is None
    (ready,) = [c for c in status["conditions"] if c["type"] == "Ready"]
    assert (ready["reason"], ready["message"]) == ("VolumeNotShared", status["message"])
    assert [(e.type, e.reason) for e in outcome.events if e.reason == "VolumeNotShared"] == [
        ("Warning", "VolumeNotShared")
    ]
    again = reconcile({**obj, "status": status}, observed)
    assert again.start == [] and not [e for e in again.events if e.reason == "VolumeNotShared"]


def test_core_waits_for_a_missing_claim_then_starts():
    obj = example()
    missing = Observed(now=1.0, claims={"asr-data": Claim("asr-data", found=False)})
    outcome = reconcile(copy.deepcopy(obj), missing)
    status = outcome.status
    assert outcome.start == [] and status["phase"] == "Pending"
    assert outcome.requeue_after is not None and outcome.requeue_after > 0
    (ready,) = [c for c in status["conditions"] if c["type"] == "Ready"]
    assert ready["reason"] == "VolumeNotFound"
    assert [e.reason for e in outcome.events] == ["VolumeNotFound"]
    still = reconcile({**obj, "status": status}, missing)
    assert still.start == [] and still.events == []
    found = Observed(now=2.0, claims={"asr-data": Claim("asr-data", True, (RWX,))})
    started = reconcile({**obj, "status": still.status}, found)
    assert [s.stage for s in started.start] == [FIRST]
    assert started.status["phase"] == FIRST_PHASE and started.status["message"] is None


def test_a_started_run_is_not_judged_by_its_claims_again():
    """Its Jobs already mount them; the driver stops reading them (read_claims)."""
    obj = example(resources={"nodes": 2})
    first = reconcile(copy.deepcopy(obj), Observed(now=1.0, claims={
        "asr-data": Claim("asr-data", True, (RWX,))}))  # fmt: skip
    assert first.status["startedGeneration"] == 1
    later = Observed(now=2.0, claims={"asr-data": Claim("asr-data", True, (RWO,))})
    again = reconcile({**obj, "status": first.status}, later)
    assert again.status["phase"] == FIRST_PHASE


def test_the_local_layout_ignores_claims():
    obj = without_claim(example(resources={"nodes": 2}))
    layout = Layout("/data", "/srv/data", "/srv/out", "/srv/out/control/directive.json")
    outcome = reconcile(obj, Observed(now=1.0), layout=layout)
    assert [s.stage for s in outcome.start] == [FIRST]
