"""Whose an object is, as controller-runtime tells it: by its controller's uid, not its name.

An AsrAdaptation deleted and created again under the same name has the same child names
and labels as its predecessor, and the garbage collector deletes the predecessor's children
only some time after it went (a Job with its pods, in the background). Labels alone would
make the new adaptation adopt them: run on, or report, what the old spec produced. So a
listed child counts as ours only when its controller ownerReference carries our uid, and a
pod only through its Job's uid. Pure: objects in, verdicts out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from marco_operator.api import GROUP, KIND
from marco_operator.resources import LABEL_ADAPTATION, LABEL_MANAGED_BY, MANAGED_BY, Owner

#: The uid of a pod's Job, as the Job controller labels its pods (Kubernetes 1.27+), and the
#: label it used before.
JOB_UID_LABEL = "batch.kubernetes.io/controller-uid"
LEGACY_JOB_UID_LABEL = "controller-uid"

#: ours: its controller is this adaptation (same uid). predecessor: it was made for an
#: earlier adaptation of this name (its controller an AsrAdaptation of the name with another
#: uid, or orphaned with our labels): to delete, never to read. stranger: someone else's.
Ownership = Literal["ours", "predecessor", "stranger"]


def controller_of(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The ownerReference marked controller, if any."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


def ownership(obj: Mapping[str, Any], owner: Owner) -> Ownership:
    ref = controller_of(obj)
    if ref is not None:
        if ref.get("uid") == owner.uid:
            return "ours"
        group = str(ref.get("apiVersion") or "").split("/")[0]
        same_name = ref.get("kind") == KIND and group == GROUP and ref.get("name") == owner.name
        return "predecessor" if same_name else "stranger"
    labels = (obj.get("metadata") or {}).get("labels") or {}
    ours_by_label = (
        labels.get(LABEL_MANAGED_BY) == MANAGED_BY and labels.get(LABEL_ADAPTATION) == owner.name
    )
    # Without a controller, an object with our labels was orphaned (its adaptation deleted
    # with --cascade=orphan): the garbage collector will never take it, so we do.
    return "predecessor" if ours_by_label else "stranger"


def job_uid_of_pod(pod: Mapping[str, Any]) -> str | None:
    """The uid of the Job a pod belongs to: its controller reference, else its label."""
    ref = controller_of(pod)
    if ref is not None:
        return str(ref.get("uid")) if ref.get("kind") == "Job" else None
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return labels.get(JOB_UID_LABEL) or labels.get(LEGACY_JOB_UID_LABEL)


def pods_of_jobs(
    pods: Iterable[Mapping[str, Any]], jobs: Iterable[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """The pods that belong to one of `jobs`, by the Job's uid (a predecessor's Job of the
    same name has other pods, which its garbage collection removes in the background)."""
    uids = {(job.get("metadata") or {}).get("uid") for job in jobs} - {None}
    return [pod for pod in pods if job_uid_of_pod(pod) in uids]


def describe_controller(obj: Mapping[str, Any]) -> str:
    """Who controls an object, for a message: `Kind name (uid …)`, or `no controller`."""
    ref = controller_of(obj)
    if ref is None:
        return "no controller"
    return f"{ref.get('kind')} {ref.get('name')} (uid {ref.get('uid')})"
