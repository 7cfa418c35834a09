"""Deletes name the object they mean: a Job deleted by the uid a pass observed is deleted,
a newer Job of the same name (created after that pass looked) is not.

The emulator checks DeleteOptions.preconditions as the API server does (a 409 when the uid
differs); the operator's client and reconciler.apply run for real against it.
"""

from __future__ import annotations

from typing import Any

import pytest

from marco_operator.core import Child, Observed, Outcome
from marco_operator.reconciler import apply

from .harness import NAMESPACE, EmulatedCluster

pytestmark = pytest.mark.timeout(60)

JOB = "demo-train"


def job_manifest() -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": JOB, "namespace": NAMESPACE},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": []}}},
    }


def created_uid(cluster: EmulatedCluster) -> str:
    assert cluster.kube.create(job_manifest())
    stored = cluster.kube.get(cluster.path("batch/v1", "jobs", JOB))
    assert stored is not None
    return str(stored["metadata"]["uid"])


def test_a_delete_by_uid_spares_a_newer_object_of_the_same_name(
    cluster: EmulatedCluster,
) -> None:
    path = cluster.path("batch/v1", "jobs", JOB)
    first = created_uid(cluster)
    assert cluster.kube.delete(path, uid=first)
    assert cluster.kube.get(path) is None
    second = created_uid(cluster)
    assert second != first
    # A pass that saw the first Job deletes it late: the second stays.
    assert cluster.kube.delete(path, uid=first) is False
    stored = cluster.kube.get(path)
    assert stored is not None and stored["metadata"]["uid"] == second
    assert cluster.kube.delete(path, uid=second)
    assert cluster.kube.get(path) is None


def test_apply_deletes_only_the_job_core_observed(cluster: EmulatedCluster) -> None:
    path = cluster.path("batch/v1", "jobs", JOB)
    observed_uid = created_uid(cluster)
    assert cluster.kube.delete(path)  # gone, and made again, before the stale pass acts
    newer = created_uid(cluster)
    body = {"metadata": {"namespace": NAMESPACE, "name": "demo", "uid": "owner-uid"}}
    stale = Outcome(status={}, delete=[Child("Job", JOB, foreground=True, uid=observed_uid)])
    apply(cluster.kube, body, Observed(), stale)
    stored = cluster.kube.get(path)
    assert stored is not None and stored["metadata"]["uid"] == newer
    current = Outcome(status={}, delete=[Child("Job", JOB, foreground=True, uid=newer)])
    apply(cluster.kube, body, Observed(), current)
    assert cluster.kube.get(path) is None
    # Both deletes were sent, in the foreground; only the second matched the Job there.
    assert [policy for p, policy in cluster.deletions if p.endswith(f"/jobs/{JOB}")][-2:] == [
        "Foreground",
        "Foreground",
    ]
