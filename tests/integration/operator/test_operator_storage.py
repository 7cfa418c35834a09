"""The shared volume of a cluster run, against the emulator: a spec without a claim, a
claim that does not exist yet, and one that cannot be mounted by pods at once.

The claims are PersistentVolumeClaims created through the API as a user would; the
operator reads them (RBAC `get`) before it creates the first Job.
"""

from __future__ import annotations

from typing import Any

import pytest

from .harness import EmulatedCluster, JobController, OperatorRun, wait_for
from .test_operator_kopf import (
    NAME,
    condition,
    events_in_order,
    make_spec,
    more_passes,
    phase_is,
)

pytestmark = pytest.mark.timeout(60)


def _ready(cluster: EmulatedCluster, reason: str) -> dict[str, Any]:
    """The status once its Ready condition has this reason."""
    return wait_for(
        f"Ready reason {reason}",
        lambda: (
            (s := cluster.status(NAME))
            and any(c["type"] == "Ready" and c["reason"] == reason for c in s.get("conditions", []))
            and s
        ),
    )


def _patch_spec(cluster: EmulatedCluster, patch: dict[str, Any]) -> None:
    path = f"{cluster.path('asr.marco.dev/v1alpha1', 'asradaptations', NAME)}"
    cluster.kube.merge_patch(path, {"spec": patch})


def test_a_spec_without_a_claim_is_invalid_on_a_cluster_naming_the_field(
    cluster: EmulatedCluster, jobs: JobController, operator: OperatorRun
) -> None:
    """The emulator runs no CEL: the operator's own check refuses it (a cluster whose API
    server skips the CRD's rule gets the same words)."""
    spec = make_spec()
    del spec["data"]["volumeClaim"]
    cluster.apply_adaptation(NAME, spec)
    status = _ready(cluster, "InvalidSpec")
    assert status["phase"] == "Invalid"
    assert status["message"].startswith("spec.data.volumeClaim: required on a cluster")
    assert "ReadWriteMany" in status["message"] and "marco run" in status["message"]
    (said,) = events_in_order(cluster, "InvalidSpec")
    assert said["type"] == "Warning" and said["message"] == status["message"]
    assert cluster.jobs(NAME) == []
    # Naming the shared claim (the fixture's, ReadWriteMany) lets the run start.
    _patch_spec(cluster, {"data": {"volumeClaim": "asr-data"}})
    jobs.wait_job(NAME, "filter")


@pytest.mark.parametrize("mode", ["ReadWriteOnce", "ReadWriteOncePod"])
def test_a_claim_without_read_write_many_under_two_nodes_is_refused_before_any_job(
    cluster: EmulatedCluster, jobs: JobController, operator: OperatorRun, mode: str
) -> None:
    cluster.create_claim("single", (mode,))
    cluster.apply_adaptation(
        NAME, make_spec(data={"volumeClaim": "single"}, resources={"nodes": 2})
    )
    status = _ready(cluster, "VolumeNotShared")
    assert status["phase"] == "Invalid"
    message = condition(status, "Ready")["message"]
    assert message == status["message"]
    # The claim, its access modes, the field naming it, why pods share it, what to change.
    assert message.startswith(f"spec.data.volumeClaim 'single' has access modes {mode}: ")
    assert "spec.resources.nodes is 2" in message
    assert "ReadWriteMany" in message and "spec.resources.nodes 1" in message
    (said,) = events_in_order(cluster, "VolumeNotShared")
    assert said["type"] == "Warning" and said["message"] == message
    assert cluster.jobs(NAME) == [] and "startedGeneration" not in status
    # A claim's access modes never change: the fix is the spec, naming a shared claim.
    cluster.create_claim("shared", ("ReadWriteMany",))
    _patch_spec(cluster, {"data": {"volumeClaim": "shared"}})
    filter_job = jobs.wait_job(NAME, "filter")
    volumes = filter_job["spec"]["template"]["spec"]["volumes"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "shared"}} in volumes
    assert len(events_in_order(cluster, "VolumeNotShared")) == 1


def test_a_read_write_once_claim_serves_a_run_whose_pods_run_one_at_a_time(
    cluster: EmulatedCluster, jobs: JobController, operator: OperatorRun
) -> None:
    """nodes 1, no shards, no trials: one pod at a time, ReadWriteOnce is enough. An unbound
    claim (WaitForFirstConsumer) is judged by the modes it asks for."""
    cluster.create_claim("single", ("ReadWriteOnce",), bound=False)
    cluster.apply_adaptation(NAME, make_spec(data={"volumeClaim": "single"}))
    jobs.wait_job(NAME, "filter")
    assert events_in_order(cluster, "VolumeNotShared") == []


def test_two_nodes_on_a_read_write_many_claim_start_their_jobs(
    cluster: EmulatedCluster, jobs: JobController, operator: OperatorRun
) -> None:
    cluster.create_claim("shared", ("ReadWriteMany",))
    cluster.apply_adaptation(
        NAME,
        make_spec(data={"volumeClaim": "shared"}, resources={"nodes": 2},
                  profile={"shards": 4}),
    )  # fmt: skip
    jobs.wait_job(NAME, "filter")
    # The pass writes the status after it created the Job.
    status = wait_for("phase Filtering", phase_is(cluster, "Filtering"))
    assert status.get("startedGeneration") == 1


def test_a_missing_claim_is_waited_for_and_the_run_starts_once_it_exists(
    cluster: EmulatedCluster, jobs: JobController, operator: OperatorRun
) -> None:
    """Not Invalid: the claim is often created after the adaptation (one `kubectl apply` of a
    folder), as a pod waits for its claim. Said once, looked for again."""
    cluster.apply_adaptation(NAME, make_spec(output={"volumeClaim": "results"}))
    status = _ready(cluster, "VolumeNotFound")
    assert status["phase"] == "Pending"
    assert status["message"].startswith(
        "PersistentVolumeClaim 'results' (spec.output.volumeClaim) not found"
    )
    (said,) = events_in_order(cluster, "VolumeNotFound")
    assert said["type"] == "Warning"
    more_passes(operator, 2)  # looked for again: still no Job, the Event not repeated
    assert cluster.jobs(NAME) == [] and len(events_in_order(cluster, "VolumeNotFound")) == 1
    cluster.create_claim("results", ("ReadWriteOnce",))
    job = jobs.wait_job(NAME, "filter")
    volumes = job["spec"]["template"]["spec"]["volumes"]
    assert {"name": "output", "persistentVolumeClaim": {"claimName": "results"}} in volumes
    wait_for("phase Filtering", phase_is(cluster, "Filtering"))
