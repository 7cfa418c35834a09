"""A stage Job the Job controller cannot make pods for (issue 13): when the operator asks its
Events (reconciler.without_pods, no_pod_trouble), and what it says. The emulator test
(test_operator_failures.py) covers the way through the kopf driver; the words are written
out here."""

from __future__ import annotations

from typing import Any

import pytest

from marco_operator.kube import KubeError
from marco_operator.reconciler import no_pod_trouble, without_pods

CREATED = "2025-01-01T00:00:00Z"
T0 = 1735689600.0  # CREATED in Unix seconds


def job(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "a-filter", "namespace": "asr", "uid": "u-1",
                     "creationTimestamp": CREATED},
        "spec": {},
        "status": status,
    }  # fmt: skip


def test_asked_only_for_a_running_job_without_pods_past_the_bound() -> None:
    assert without_pods(job(), [], T0 + 30, 30.0)
    assert not without_pods(job(), [], T0 + 29, 30.0)  # not yet
    assert not without_pods(job(), [{"metadata": {"name": "a-filter-pod"}}], T0 + 60, 30.0)
    assert not without_pods(job(active=1), [], T0 + 60, 30.0)  # the watch lags its count
    failed = job(conditions=[{"type": "Failed", "status": "True"}])
    assert not without_pods(failed, [], T0 + 60, 30.0)
    suspended = {**job(), "spec": {"suspend": True}}
    assert not without_pods(suspended, [], T0 + 60, 30.0)


class Events:
    """Kube's list, serving these Events (or raising), and recording what was asked."""

    def __init__(self, items: list[dict[str, Any]] | Exception) -> None:
        self.items = items
        self.asked: list[tuple[str, Any]] = []

    def list(self, path: str, labels: Any = None, fields: Any = None) -> list[dict[str, Any]]:
        self.asked.append((path, fields))
        if isinstance(self.items, Exception):
            raise self.items
        return self.items


def event(type_: str, reason: str, message: str, last: str) -> dict[str, Any]:
    return {"type": type_, "reason": reason, "message": message, "lastTimestamp": last}


def test_the_latest_warning_of_the_job_says_why() -> None:
    kube = Events([
        event("Warning", "FailedCreate", "Error creating: quota", "2025-01-01T00:00:05Z"),
        event("Warning", "FailedCreate", "Error creating: quota still", "2025-01-01T00:00:40Z"),
        event("Normal", "SuccessfulCreate", "Created pod: a-filter-x", "2025-01-01T00:00:50Z"),
    ])  # fmt: skip
    said = no_pod_trouble(kube, job(), 30.0)  # type: ignore[arg-type]
    assert said == "no pod: FailedCreate: Error creating: quota still"
    fields = {"involvedObject.kind": "Job", "involvedObject.uid": "u-1"}
    assert kube.asked == [("/api/v1/namespaces/asr/events", fields)]


@pytest.mark.parametrize(
    ("items", "said"),
    [
        ([], "no pod after 30 s, and no Warning Event of the Job says why"),
        (
            KubeError("GET", "/api/v1/namespaces/asr/events", 403, "forbidden"),
            "no pod after 30 s; its Events could not be read (HTTP 403 Forbidden: forbidden)",
        ),
    ],
)
def test_without_a_warning_it_still_says_there_is_no_pod(items: Any, said: str) -> None:
    assert no_pod_trouble(Events(items), job(), 30.0) == said  # type: ignore[arg-type]
