"""The shared volume a cluster run needs, judged from its PersistentVolumeClaims (pure).

Every stage pod mounts the run's claims (resources._volumes). Kubernetes attaches a
ReadWriteOnce volume to one node at a time and a ReadWriteOncePod volume to one pod: when
pods run at once (torchrun nodes, a sharded stage, LR trials side by side) one on another
node waits in Multi-Attach (ReadWriteOnce; pods that land on one node share it), or stays
unschedulable (ReadWriteOncePod), while its Job counts as running, until its deadline
fails it. Where pods land is the scheduler's, so the check does not count on one node. So
before the first Job the operator reads the claims (reconciler: the I/O edge) and core
refuses a run whose pods would wait so (`claim_refusal`), naming the field that needs
ReadWriteMany and what to change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from marco_operator.api import AsrAdaptationSpec

READ_WRITE_MANY = "ReadWriteMany"
READ_WRITE_ONCE_POD = "ReadWriteOncePod"

#: Reasons (Ready condition and Event) of a run refused or held for its claims.
VOLUME_NOT_FOUND = "VolumeNotFound"
VOLUME_NOT_SHARED = "VolumeNotShared"


@dataclass(frozen=True)
class Claim:
    """What the operator knows of one PersistentVolumeClaim."""

    name: str
    found: bool
    #: The bound volume's access modes (status.accessModes), or the requested ones
    #: (spec.accessModes) while it is not bound yet.
    access_modes: tuple[str, ...] = ()


def claim_of(name: str, manifest: Mapping[str, Any] | None) -> Claim:
    """A Claim from the API's PersistentVolumeClaim (None: there is none of that name).

    A bound claim's status lists what its volume offers (at least what was asked for), and
    the attach-detach controller judges by the volume; an unbound one (WaitForFirstConsumer
    binds only when a pod uses it) is judged by what it asks for."""
    if manifest is None:
        return Claim(name=name, found=False)
    modes = (manifest.get("status") or {}).get("accessModes") or (manifest.get("spec") or {}).get(
        "accessModes"
    )
    return Claim(name=name, found=True, access_modes=tuple(modes or ()))


def claim_fields(spec: AsrAdaptationSpec) -> dict[str, str]:
    """The claims every stage pod mounts, by name, each with the field that names it."""
    data = spec.data.volume_claim
    output = spec.output.volume_claim
    named: dict[str, str] = {}
    if data:
        named[data] = "spec.data.volumeClaim"
    if output and output not in named:
        named[output] = "spec.output.volumeClaim"
    return named


def concurrent_pods(spec: AsrAdaptationSpec) -> list[str]:
    """Why pods of this run mount the claims at the same time, each reason naming its field;
    empty when the stages' pods run one after another."""
    reasons = []
    if spec.resources.nodes > 1:
        reasons.append(f"spec.resources.nodes is {spec.resources.nodes} (one pod per node)")
    if spec.profile.enabled and spec.profile.shards > 1:
        reasons.append(f"spec.profile.shards is {spec.profile.shards}")
    if spec.augmentation.enabled and spec.augmentation.shards > 1:
        reasons.append(f"spec.augmentation.shards is {spec.augmentation.shards}")
    if spec.baseline.enabled and spec.baseline.shards > 1:
        reasons.append(f"spec.baseline.shards is {spec.baseline.shards}")
    if spec.evaluation.enabled and spec.evaluation.shards > 1:
        reasons.append(f"spec.evaluation.shards is {spec.evaluation.shards}")
    if spec.trials.enabled:
        trials = len(spec.trials.learning_rates or ()) or spec.trials.count
        if trials > 1:
            reasons.append(f"spec.trials runs {trials} LR trial Jobs at once")
    return reasons


def _how_to_share(reasons: list[str]) -> str:
    fields = [reason.split(" ", 1)[0] for reason in reasons]
    ones = " and ".join(f"{field} 1" for field in fields if field != "spec.trials")
    options = [ones] if ones else []
    if "spec.trials" in fields:
        options.append("spec.trials.enabled false (or a single learning rate)")
    return " or ".join(options)


def claim_refusal(spec: AsrAdaptationSpec, claims: Mapping[str, Claim]) -> tuple[str, str] | None:
    """(reason, message) when the run's claims cannot serve its pods, else None.

    VolumeNotFound: a claim does not exist (yet). VolumeNotShared: pods run at once
    (`concurrent_pods`) and a claim lacks ReadWriteMany. A claim not in `claims` was not
    read and is not judged."""
    named = claim_fields(spec)
    missing = [name for name in named if name in claims and not claims[name].found]
    if missing:
        listed = ", ".join(f"{name!r} ({named[name]})" for name in missing)
        return VOLUME_NOT_FOUND, (
            f"PersistentVolumeClaim {listed} not found: the run waits for it and starts once "
            "it exists; create it in this namespace, or name an existing one"
        )
    reasons = concurrent_pods(spec)
    if not reasons:
        return None
    unshared = [
        claims[name]
        for name in named
        if name in claims and READ_WRITE_MANY not in claims[name].access_modes
    ]
    if not unshared:
        return None
    claim = unshared[0]
    modes = ", ".join(claim.access_modes) or "none listed"
    if READ_WRITE_ONCE_POD in claim.access_modes:
        only, wait = "one pod at a time", "all but one would stay Pending, unschedulable"
    else:
        only, wait = "one node at a time", "those on other nodes would wait in Multi-Attach"
    return VOLUME_NOT_SHARED, (
        f"{named[claim.name]} {claim.name!r} has access modes {modes}: it mounts on {only}, "
        f"but {'; '.join(reasons)}: pods mount it at once, and {wait}. "
        f"Name a ReadWriteMany claim (a StorageClass that offers it: NFS, CephFS, a cloud "
        f"file store) in {named[claim.name]}, or set {_how_to_share(reasons)}"
    )
