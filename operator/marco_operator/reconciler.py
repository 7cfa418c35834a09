"""One level-triggered pass over one AsrAdaptation: observe, decide (core), act.

The driver hands in the adaptation, its Jobs and pods, and its ConfigMap and
Service as its watches hold them (kopf's body and indexes); the pass reads only
what no watch can be trusted with or carries: the directive in the ConfigMap
(fresh, once one exists), rank 0's history, and the Events of a stage Job left
without pods (why the Job controller cannot create them). Nothing is remembered
between passes, so any number of passes, by any number of operator restarts,
converge on the same children and the same status.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import socket
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from urllib3.exceptions import HTTPError

from marco_contract.evaluation import merge_evaluation_results
from marco_contract.formats import Directive, StageResult
from marco_contract.results import parse_stage_result
from marco_operator.api import API_VERSION, KIND, PLURAL, parse_spec
from marco_operator.core import (
    REQUEUE_DELETING,
    Child,
    Event,
    Failure,
    JobState,
    Observed,
    Outcome,
    Queueing,
    describe_exception,
    failed_pass,
    reconcile,
    settled,
)
from marco_operator.endpoint_auth import endpoint_token
from marco_operator.kube import (
    PLURALS,
    Kube,
    KubeError,
    collection_path,
    manifest_collection_path,
)
from marco_operator.ownership import describe_controller, ownership, pods_of_jobs
from marco_operator.policy import Policy
from marco_operator.rank0 import (
    TRAINER_STARTUP_SECONDS,
    TRAINER_TIMEOUT_SECONDS,
    evaluations_url,
    read_evaluations,
)
from marco_operator.resources import (
    API_PORT,
    DIRECTIVE_KEY,
    LABEL_COMPLETION_INDEX,
    LABEL_STAGE,
    LABEL_TRIAL,
    QUEUE_LABEL,
    TRAINER_CONTAINER,
    Owner,
    control_configmap,
    control_configmap_name,
    endpoint_secret,
    gang_scheduled,
    pod_group,
    stage_job,
    train_service,
    train_service_name,
)
from marco_operator.storage import Claim, claim_fields, claim_of

logger = logging.getLogger(__name__)

TRAIN_STAGE = "train"
JOB_NAME_LABEL = "job-name"
REPORTING_COMPONENT = "marco-asr-operator"
#: A running stage Job with no pod this long after its creation is asked why: its Events.
#: The Job controller creates pods within a second or two; 30 s without one means it cannot
#: (a ServiceAccount that does not exist, a quota, an admission webhook refusing the pod).
NO_POD_SECONDS = 30.0


@dataclass(frozen=True)
class Options:
    trainer_port: int = API_PORT
    trainer_timeout: float = TRAINER_TIMEOUT_SECONDS
    #: The key each adaptation's endpoint token derives from (endpoint_auth); made at
    #: start when the operator is given none.
    endpoint_key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    policy: Policy = field(default_factory=Policy)
    #: Seconds a running Job may have no pod before its Events are read (NO_POD_SECONDS).
    no_pod_seconds: float = NO_POD_SECONDS
    #: Seconds a started rank 0 may refuse connections uncounted (TRAINER_STARTUP_SECONDS).
    trainer_startup_seconds: float = TRAINER_STARTUP_SECONDS
    #: The Kueue LocalQueue of an adaptation without spec.queueName (kueue.defaultQueueName).
    default_queue_name: str | None = None

    def token(self, owner: Owner) -> str:
        return endpoint_token(self.endpoint_key, owner.namespace, owner.name, owner.uid)


def adaptation_path(namespace: str, name: str = "") -> str:
    base = collection_path(API_VERSION, PLURAL, namespace)
    return f"{base}/{name}" if name else base


def control_path(namespace: str, name: str) -> str:
    configmap = control_configmap_name(Owner(name=name, namespace=namespace, uid=""))
    return f"{collection_path('v1', 'configmaps', namespace)}/{configmap}"


def child_path(namespace: str, child: Child) -> str:
    """Where a child of one of the operator's kinds (kube.PLURALS) lives."""
    api_version = "batch/v1" if child.kind == "Job" else "v1"
    return f"{collection_path(api_version, PLURALS[child.kind], namespace)}/{child.name}"


# --- observing ----------------------------------------------------------------------------


def _condition(job: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for condition in job.get("status", {}).get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return condition
    return None


def _completion_index(pod: Mapping[str, Any]) -> str | None:
    meta = pod.get("metadata", {})
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    return labels.get(LABEL_COMPLETION_INDEX) or annotations.get(LABEL_COMPLETION_INDEX)


def _created(pod: Mapping[str, Any]) -> tuple[str, str]:
    """A pod's age order: creationTimestamp (RFC 3339 in UTC sorts as text), then name."""
    meta = pod.get("metadata") or {}
    return str(meta.get("creationTimestamp") or ""), str(meta.get("name") or "")


def _phase(pod: Mapping[str, Any]) -> str | None:
    return (pod.get("status") or {}).get("phase")


def _terminated(pod: Mapping[str, Any]) -> bool:
    """Done, or on its way out: the Job controller counts it no more (a replacement may run)."""
    return _phase(pod) in ("Succeeded", "Failed") or bool(
        (pod.get("metadata") or {}).get("deletionTimestamp")
    )


def _lead_pods(pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The pods of completion index 0 of an Indexed Job, else all the Job's pods; oldest first.

    Every try of a retried Job leaves its pod: a failed one stays beside its replacement, so
    which one is current is read from the pods themselves, never from the order a watch or a
    listing (by name, a random suffix) gives them in.
    """
    indexed = [pod for pod in pods if _completion_index(pod) is not None]
    lead = [pod for pod in indexed if _completion_index(pod) == "0"] if indexed else list(pods)
    return sorted(lead, key=_created)


def _lead_pod(pods: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """Rank 0 now: the newest pod of completion index 0 (else of the Job) still running or
    about to, so a replacement takes over from the try that failed; None when there is none."""
    live = [pod for pod in _lead_pods(pods) if not _terminated(pod)]
    return live[-1] if live else None


def _succeeded(pod: Mapping[str, Any]) -> bool:
    if _phase(pod) is not None:
        return _phase(pod) == "Succeeded"
    # No phase written (yet): a container that exited 0 says as much.
    return any(
        ((status.get("state") or {}).get("terminated") or {}).get("exitCode") == 0
        for status in (pod.get("status") or {}).get("containerStatuses") or []
    )


def _result_pod(pods: Sequence[Mapping[str, Any]], complete: bool) -> Mapping[str, Any] | None:
    """The pod whose termination message is a finished Job's result: the lead pod that
    succeeded (the Job's retry, not the tries that failed before it); of a failed Job, its
    last try."""
    lead = _lead_pods(pods)
    if complete:
        lead = [pod for pod in lead if _succeeded(pod)]
    return lead[-1] if lead else None


def _termination_result(pod: Mapping[str, Any], job_name: str) -> StageResult | None:
    for status in pod.get("status", {}).get("containerStatuses") or []:
        message = ((status.get("state") or {}).get("terminated") or {}).get("message")
        if not message:
            continue
        result = parse_stage_result(message)
        if result is not None:
            return result
        logger.info("job %s: termination message is not a stage result", job_name)
    return None


def _index_results(pods: Sequence[Mapping[str, Any]], job_name: str) -> list[StageResult]:
    """Each completion index's result: the termination message of its newest succeeded pod
    (an index retried after a failure leaves the failed try beside it)."""
    newest: dict[str, Mapping[str, Any]] = {}
    for pod in sorted(pods, key=_created):
        index = _completion_index(pod)
        if index is not None and _succeeded(pod):
            newest[index] = pod
    found = (_termination_result(pod, job_name) for pod in newest.values())
    return [result for result in found if result is not None]


#: The failure reason of a sharded Job whose shards' results give no measurement.
SHARDS_FAILED = "ShardsFailed"


def _job_result(
    pods: Sequence[Mapping[str, Any]], complete: bool, job_name: str
) -> StageResult | None:
    """A finished Job's result: its lead pod's, or, when that is one shard's of a sharded
    baseline or evaluate, the merge of every shard's (the operator is the one reader that
    sees them all: their termination messages; WER0 and the final WER come from here)."""
    pod = _result_pod(pods, complete)
    result = _termination_result(pod, job_name) if pod is not None else None
    if not complete or result is None or (result.num_shards or 1) == 1:
        return result
    try:
        return merge_evaluation_results(_index_results(pods, job_name))
    except ValueError as error:
        # A shard's pod gone before its result was read: no WER is better than a slice's.
        logger.warning("job %s: shard results do not merge: %s", job_name, error)
        return result.model_copy(
            update={
                "ok": False,
                "wer": None,
                "cer": None,
                "reference_wer": None,
                "message": f"shard results do not merge: {error}",
            }
        )


#: Waiting reasons on the normal way to a running container: no trouble (yet).
STARTING = frozenset({"ContainerCreating", "PodInitializing"})
#: Longest piece of a container's own words (its termination message) copied into a status.
MAX_WORDS = 300


def _words(reason: str, message: str | None) -> str:
    message = " ".join((message or "").split())
    if len(message) > MAX_WORDS:
        message = message[: MAX_WORDS - 1] + "…"
    return f"{reason}: {message}" if message else reason


def _last_words(message: str | None) -> str | None:
    """What a failed container said last: its stage result's message, else the last line of
    its termination message (under FallbackToLogsOnError, the tail of its log)."""
    if not message:
        return None
    result = parse_stage_result(message)
    if result is not None:
        return result.message
    lines = [line for line in message.splitlines() if line.strip()]
    return lines[-1] if lines else None


def _termination(terminated: Mapping[str, Any]) -> str | None:
    code = terminated.get("exitCode")
    if not code:  # 0 (or none): a container that finished, or was stopped, says nothing wrong
        return None
    reason = terminated.get("reason") or "Error"
    return _words(f"{reason} (exit code {code})", _last_words(terminated.get("message")))


def pod_trouble(pod: Mapping[str, Any]) -> str | None:
    """Why a stage pod is not running, or what killed it, in the scheduler's and the
    kubelet's own words; None when its status tells of nothing wrong.

    Read from the pod alone (the driver's index holds pods, not their Events): the
    PodScheduled condition when False (Unschedulable: no node fits its requests, node
    selector or tolerations, or its claim is unbound), a failed pod's reason (Evicted,
    DeadlineExceeded), each container's waiting reason (ImagePullBackOff, ErrImagePull,
    InvalidImageName, CreateContainerConfigError: a missing Secret or ConfigMap...) and
    its terminations, the last one included (OOMKilled (exit code 137), or an exit code
    and the container's last words). A volume that will not attach (Multi-Attach,
    FailedAttachVolume) shows only in Events: such a pod waits in ContainerCreating, which
    says nothing, until the stage's deadline.
    """
    status = pod.get("status") or {}
    problems: list[str] = []
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            reason = condition.get("reason") or "Unschedulable"
            problems.append(_words(reason, condition.get("message")))
    if status.get("phase") == "Failed" and status.get("reason"):
        problems.append(_words(status["reason"], status.get("message")))
    containers = [*(status.get("initContainerStatuses") or [])]
    containers += status.get("containerStatuses") or []
    for container in containers:
        state = container.get("state") or {}
        waiting = state.get("waiting") or {}
        if waiting.get("reason") and waiting["reason"] not in STARTING:
            problems.append(_words(waiting["reason"], waiting.get("message")))
        for terminated in (
            state.get("terminated"),
            (container.get("lastState") or {}).get("terminated"),
        ):
            said = _termination(terminated or {})
            if said is not None:
                problems.append(said)
    if not problems:
        return None
    name = (pod.get("metadata") or {}).get("name", "?")
    return f"pod {name}: " + "; ".join(dict.fromkeys(problems))


def job_trouble(pods: Sequence[Mapping[str, Any]]) -> str | None:
    """The first troubled pod of a Job (by name: completion index order), and how many more."""
    troubles = [t for pod in sorted(pods, key=_pod_name) if (t := pod_trouble(pod)) is not None]
    if not troubles:
        return None
    more = len(troubles) - 1
    return troubles[0] + (f" (and {more} more pod{'s' if more > 1 else ''})" if more else "")


def _timestamp_seconds(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def without_pods(job: Mapping[str, Any], own_pods: Sequence[Any], now: float, bound: float) -> bool:
    """A Job that should have pods (neither finished nor suspended), has none now, by the
    watch and by its own count, and was created `bound` seconds ago or more. Measured from
    its creation, not from its last pod: nothing is remembered between passes."""
    if own_pods or int((job.get("status") or {}).get("active") or 0):
        return False
    if _condition(job, "Complete") or _condition(job, "Failed") or _condition(job, "FailureTarget"):
        return False
    if (job.get("spec") or {}).get("suspend"):
        return False
    created = _timestamp_seconds((job.get("metadata") or {}).get("creationTimestamp"))
    return created is not None and now - created >= bound


def _event_time(event: Mapping[str, Any]) -> float:
    for text in (
        event.get("lastTimestamp"),
        (event.get("series") or {}).get("lastObservedTime"),
        event.get("eventTime"),
        (event.get("metadata") or {}).get("creationTimestamp"),
    ):
        seconds = _timestamp_seconds(text)
        if seconds is not None:
            return seconds
    return 0.0


def no_pod_trouble(kube: Kube, job: Mapping[str, Any], bound: float) -> str:
    """Why a Job has no pod, in the Job controller's words: its latest Warning Event
    (FailedCreate: `Error creating: pods "…" is forbidden: …`, the API server's refusal of
    the pod). Read from the API (no watch holds Events; RBAC `list` on events)."""
    meta = job["metadata"]
    try:
        events = kube.list(
            collection_path("v1", "events", meta["namespace"]),
            fields={"involvedObject.kind": "Job", "involvedObject.uid": meta["uid"]},
        )
    except (KubeError, HTTPError, OSError) as error:
        said = error.describe() if isinstance(error, KubeError) else str(error)
        logger.warning("Job %s: cannot list its Events: %s", meta["name"], said)
        return f"no pod after {bound:g} s; its Events could not be read ({said})"
    warnings = [e for e in events if e.get("type") == "Warning"]
    if not warnings:
        return f"no pod after {bound:g} s, and no Warning Event of the Job says why"
    latest = max(warnings, key=_event_time)
    return "no pod: " + _words(latest.get("reason") or "Warning", latest.get("message"))


def _pod_name(pod: Mapping[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("name", ""))


def _pods_of(pods: Iterable[Mapping[str, Any]], job: str) -> list[Mapping[str, Any]]:
    return [
        p for p in pods if (p.get("metadata", {}).get("labels") or {}).get(JOB_NAME_LABEL) == job
    ]


def _job_state(job: Mapping[str, Any], pods: Iterable[Mapping[str, Any]]) -> JobState:
    """A Job as core sees it; `pods` are the adaptation's stage pods (the lead one's
    termination message is the result of a finished Job)."""
    meta = job["metadata"]
    job_labels = meta.get("labels") or {}
    trial = job_labels.get(LABEL_TRIAL)
    complete = _condition(job, "Complete") is not None
    # FailureTarget: the Job controller has decided the Job fails (past its deadline, out of
    # retries) and is stopping its pods; Failed follows once they are gone (Kubernetes 1.31+).
    failed_condition = _condition(job, "Failed") or _condition(job, "FailureTarget")
    reason = None
    if failed_condition is not None:
        reason = (
            f"{failed_condition.get('reason') or 'Failed'}: {failed_condition.get('message') or ''}"
        )
    result = None
    own = _pods_of(pods, meta["name"])
    if complete or failed_condition is not None:
        result = _job_result(own, complete, meta["name"])
    failed = failed_condition is not None
    if complete and result is not None and (result.num_shards or 1) > 1 and not result.ok:
        # Every shard succeeded, yet together they measured nothing (no utterance decoded in
        # any, or a shard's result missing): the stage fails, as one pod would have exited 1.
        complete, failed, reason = False, True, f"{SHARDS_FAILED}: {result.message}"
    return JobState(
        name=meta["name"],
        stage=job_labels.get(LABEL_STAGE, ""),
        trial=int(trial) if trial is not None and trial.isdigit() else None,
        complete=complete,
        failed=failed,
        failure_reason=reason,
        suspended=bool(job.get("spec", {}).get("suspend")),
        active=int(job.get("status", {}).get("active") or 0),
        result=result,
        trouble=None if complete else job_trouble(own),
        queue=job_labels.get(QUEUE_LABEL),
        uid=meta.get("uid"),
    )


def _rank0(train: JobState | None, pods: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The pod of a running rank 0 with an address to ask; None when there is none."""
    if train is None or train.complete or train.failed:
        return None
    rank0 = _lead_pod(_pods_of(pods, train.name))
    if rank0 is None or not (rank0.get("status") or {}).get("podIP"):
        return None
    return rank0


def starting(pod: Mapping[str, Any], now: float, allowance: float) -> bool:
    """The trainer container of `pod` started less than `allowance` seconds ago (its
    current run: a restarted container starts again), or has no start recorded yet."""
    status = pod.get("status") or {}
    started = None
    for container in status.get("containerStatuses") or []:
        if container.get("name") == TRAINER_CONTAINER:
            started = ((container.get("state") or {}).get("running") or {}).get("startedAt")
    seconds = _timestamp_seconds(started or status.get("startTime"))
    return seconds is None or now - seconds < allowance


def _directive(configmap: Mapping[str, Any] | None, namespace: str, name: str) -> Directive | None:
    text = ((configmap or {}).get("data") or {}).get(DIRECTIVE_KEY)
    if not text:
        return None
    try:
        return Directive.model_validate_json(text)
    except ValidationError:
        logger.warning("%s/%s: %s holds no valid directive", namespace, name, DIRECTIVE_KEY)
        return None


@dataclass(frozen=True)
class Children:
    """The adaptation's stage Jobs and their pods, and the ConfigMaps and Services labelled
    as its (its directive's and its rendezvous', or an earlier adaptation's of its name),
    as the driver's watch caches hold them."""

    jobs: tuple[Mapping[str, Any], ...] = ()
    pods: tuple[Mapping[str, Any], ...] = ()
    configmaps: tuple[Mapping[str, Any], ...] = ()
    services: tuple[Mapping[str, Any], ...] = ()


def named(objects: Iterable[Mapping[str, Any]], name: str) -> Mapping[str, Any] | None:
    """The object of `name` among `objects`, None when there is none."""
    return next((o for o in objects if (o.get("metadata") or {}).get("name") == name), None)


def _version(obj: Mapping[str, Any] | None) -> str | None:
    return ((obj or {}).get("metadata") or {}).get("resourceVersion")


@dataclass(frozen=True)
class Observation:
    """What observe() found: core's input, the trouble met on the way, rank 0's URL (None
    when no train pod runs) and the resourceVersion of the directive's ConfigMap it took
    as the truth (None when it has none of ours)."""

    observed: Observed
    errors: list[str]
    rank0_url: str | None
    configmap_version: str | None


#: The kinds of child the driver's watches index: what a pass created of these, the next
#: pass sees even before the watch brings it (Pass.created).
REMEMBERED_KINDS = ("Job", "ConfigMap", "Service")


@dataclass(frozen=True)
class Applied:
    """What apply() wrote: the adaptation as its status write left it (None: no write),
    the directive's ConfigMap's resourceVersion after a patch of it (None: no patch), the
    children of REMEMBERED_KINDS it created (as the API server answered) and the (kind,
    name) of those it deleted."""

    adaptation: dict[str, Any] | None = None
    configmap_version: str | None = None
    created: tuple[dict[str, Any], ...] = ()
    deleted: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Pass:
    """What one pass saw and did, for the driver's metrics, logs and next wait."""

    phase: str | None  # None: the adaptation is gone
    events: tuple[Event, ...] = ()
    requeue_after: float | None = None
    errors: tuple[str, ...] = ()  # kinds of trouble met, e.g. "trainer" (rank 0 unreadable)
    #: resourceVersion of the status this pass wrote; None when it wrote none.
    written_version: str | None = None
    #: That status, as the API server answered the write (None when it wrote none).
    written_status: Mapping[str, Any] | None = None
    settled: bool = False  # core.settled() of the status it leaves
    #: Set when the pass failed: seconds to back off before the next (core.retry_delay).
    retry_after: float | None = None
    #: Rank 0's /v1/evaluations while a train pod runs, and how many evaluations this
    #: pass read there (None: unreadable): what the driver's follower starts from.
    rank0_url: str | None = None
    evaluations_seen: int | None = None
    #: A stop is in force (status.stop): its grace period runs on the clock, not on events.
    stopping: bool = False
    #: resourceVersion of the directive's ConfigMap as this pass left it (its patch's, else
    #: the one it read), for the next pass (observe's configmap_version); None: unknown.
    configmap_version: str | None = None
    #: Children this pass created (REMEMBERED_KINDS, as the API server answered) and the
    #: (kind, name) of those it deleted: until the watch shows them, the driver adds the
    #: created ones to what the next pass finds (kopf_driver.with_own_children).
    created: tuple[dict[str, Any], ...] = ()
    deleted: tuple[tuple[str, str], ...] = ()


def claim_path(namespace: str, name: str) -> str:
    return f"{collection_path('v1', 'persistentvolumeclaims', namespace)}/{name}"


def read_claims(kube: Kube, body: Mapping[str, Any]) -> dict[str, Claim] | None:
    """The spec's PersistentVolumeClaims as the API holds them, read until the run's first
    Job (status.startedGeneration): from then on its Jobs mount them and nothing here
    would change a decision. None for a started run, or a spec core refuses anyway."""
    if (body.get("status") or {}).get("startedGeneration") is not None:
        return None
    try:
        spec = parse_spec(dict(body.get("spec") or {}))
    except ValidationError:
        return None
    namespace = body["metadata"]["namespace"]
    return {
        name: claim_of(name, kube.get(claim_path(namespace, name))) for name in claim_fields(spec)
    }


def _observed_child(kind: str, obj: Mapping[str, Any]) -> Child:
    """The object as seen: its delete names its uid, never a newer one of its name."""
    meta = obj["metadata"]
    return Child(kind, meta["name"], uid=meta.get("uid"))


def observe(
    kube: Kube,
    body: Mapping[str, Any],
    found: Children,
    options: Options,
    configmap_version: str | None = None,
) -> Observation:
    """What exists: the Jobs, pods, ConfigMaps and Services from the driver's caches (no
    listing), rank 0's history over HTTP while training runs, and the directive from its
    ConfigMap once the cache shows one of ours: read fresh unless the cache's copy is the
    version this driver knows to be current.

    Only what this adaptation controls (by uid, ownership.py) is read: a Job, ConfigMap or
    Service of an earlier adaptation of the same name is a leftover (Observed.leftovers),
    and the pods of its Jobs are not looked at. Before the first Job, the spec's
    PersistentVolumeClaims (read_claims). Also the errors met and rank 0's URL (None when
    no train pod runs), which the driver follows for new evaluations (rank0_watch).

    `configmap_version` is the resourceVersion of the directive's ConfigMap as this driver
    last wrote or read it: when the watch's copy has that version, it is the truth and no
    GET is needed (the GET was a fifth of the operator's requests at 500 adaptations)."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    owner = Owner.from_body(dict(body))
    jobs: dict[str, JobState] = {}
    trials: dict[int, JobState] = {}
    leftovers: list[Child] = []
    own_jobs = []
    for raw in found.jobs:
        whose = ownership(raw, owner)
        if whose == "ours":
            own_jobs.append(raw)
        elif whose == "predecessor":
            leftovers.append(_observed_child("Job", raw))
    pods = pods_of_jobs(found.pods, own_jobs)
    # Whether the ConfigMap and the Service exist, and whose they are, comes from the
    # watch: before the train stage neither does, and a pass reads nothing for them (the
    # two GETs of every pass were 38 % of the operator's requests at 200 adaptations). One
    # just created that the watch has not brought yet is found by its create's 409 instead.
    configmap = None
    indexed = named(found.configmaps, control_configmap_name(owner))
    if indexed is not None:
        whose = ownership(indexed, owner)
        if whose == "predecessor":
            leftovers.append(_observed_child("ConfigMap", indexed))
        elif whose == "ours":
            if configmap_version is not None and _version(indexed) == configmap_version:
                configmap = indexed  # the version this driver last wrote or read
            else:
                # Read fresh: this operator's last write to it may not have come back
                # through the watch yet, and the ConfigMap is the truth (core).
                configmap = kube.get(control_path(namespace, name))
                if configmap is not None and ownership(configmap, owner) != "ours":
                    configmap = None  # never a directive of someone else's
    service = named(found.services, train_service_name(owner))
    if service is not None and ownership(service, owner) == "predecessor":
        leftovers.append(_observed_child("Service", service))
    looked = time.time()
    for raw in own_jobs:
        state = _job_state(raw, pods)
        own = _pods_of(pods, raw["metadata"]["name"])
        if without_pods(raw, own, looked, options.no_pod_seconds):
            state = replace(state, trouble=no_pod_trouble(kube, raw, options.no_pod_seconds))
        if state.trial is not None:
            trials[state.trial] = state
        elif state.stage:
            jobs[state.stage] = state
    errors = []
    evaluations = None
    url = None
    rank0 = _rank0(jobs.get(TRAIN_STAGE), pods)
    if rank0 is not None:
        url = evaluations_url(rank0["status"]["podIP"], options.trainer_port)
        read = read_evaluations(url, options.trainer_timeout, options.token(owner))
        evaluations = read.history
        # A refusing port in the trainer's start-up is no trouble yet: nothing listens
        # until torchrun has started rank 0 (the model loads after it serves).
        if evaluations is None and not (
            read.refused and starting(rank0, looked, options.trainer_startup_seconds)
        ):
            errors.append("trainer")
    observed = Observed(
        jobs=jobs,
        trials=trials,
        evaluations=evaluations,
        directive=_directive(configmap, namespace, name),
        now=time.time(),
        leftovers=tuple(leftovers),
        claims=read_claims(kube, body),
    )
    return Observation(observed, errors, url, _version(configmap))


# --- acting -------------------------------------------------------------------------------


def children(outcome: Outcome, owner: Owner, token: str | None = None) -> list[dict[str, Any]]:
    """The Kubernetes objects of the stages core starts, in creation order: a steered stage's
    ConfigMap (the directive it mounts), Secret (its endpoint's `token`; a random one when
    None) and headless Service (its rendezvous) before its Job; a gang-scheduled Job's
    PodGroup before it, so that its scheduler knows the gang when the first pod comes."""
    manifests: list[dict[str, Any]] = []
    for start in outcome.start:
        assert outcome.spec is not None, "core starts stages of a valid spec only"
        if start.steered:
            assert outcome.directive is not None, "core gives a steered stage its directive"
            manifests.append(control_configmap(owner, outcome.directive))
            manifests.append(endpoint_secret(owner, token or secrets.token_hex(32)))
            manifests.append(train_service(owner))
        if gang_scheduled(outcome.spec, start.command):
            manifests.append(pod_group(outcome.spec, owner))
        manifests.append(stage_job(outcome.spec, owner, start.command, queue=start.queue))
    return manifests


def merged(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch of `patch` onto `target`, as the API server applies it."""
    if not isinstance(patch, Mapping):
        return patch
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merged(result.get(key), value)
    return result


def _timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def event_manifest(
    body: Mapping[str, Any], type_: str, reason: str, message: str, key: str | None = None
) -> dict:
    meta = body["metadata"]
    now = _timestamp()
    # A unique name per occurrence, as client-go does; no reliance on generateName. An Event
    # with a key (a decision, said again until it lands) has one name per adaptation and key:
    # saying it again after it landed (the status write that followed failed) is a 409.
    suffix = (
        hashlib.sha256(f"{meta.get('uid')}/{key}".encode()).hexdigest()[:16]
        if key is not None
        else uuid.uuid4().hex[:16]
    )
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{meta['name']}.{suffix}",
            "namespace": meta["namespace"],
        },
        "involvedObject": {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "source": {"component": REPORTING_COMPONENT},
        "reportingComponent": REPORTING_COMPONENT,
        "reportingInstance": socket.gethostname(),
    }


class ChildError(Exception):
    """The API server did not take a write to one of the adaptation's children."""

    def __init__(self, verb: str, kind: str, name: str, error: KubeError) -> None:
        self.verb, self.kind, self.name, self.error = verb, kind, name, error
        what = "refused" if error.refused else "failed"
        super().__init__(f"{verb} {kind} {name}: {what} by the API server ({error.describe()})")


@contextmanager
def _writing(verb: str, kind: str, name: str) -> Iterator[None]:
    """A KubeError from a write to the child `kind` `name`, as a ChildError naming it."""
    try:
        yield
    except KubeError as error:
        raise ChildError(verb, kind, name, error) from error


class NotOurs(Exception):
    """A child's name is taken by an object this adaptation does not control, and that no
    earlier adaptation of its name left either: someone else's, never touched."""

    def __init__(self, kind: str, name: str, existing: Mapping[str, Any]) -> None:
        self.kind, self.name = kind, name
        super().__init__(
            f"creating {kind} {name}: one of that name exists and is not this AsrAdaptation's "
            f"(its controller: {describe_controller(existing)}); delete or rename it"
        )


class PredecessorInTheWay(Exception):
    """A create found (HTTP 409) a child an earlier adaptation of this name left, which no
    watch had shown: it is being deleted, and the pass stops before anything else."""

    def __init__(self, child: Child) -> None:
        self.child = child
        super().__init__(f"{child} belongs to an earlier AsrAdaptation of this name")


def describe_failure(error: BaseException) -> Failure:
    """A failed pass's error as a user reads it: what was refused, or what went wrong."""
    if isinstance(error, NotOurs):
        return Failure("ChildNotOurs", str(error))
    if isinstance(error, GangSchedulerMissing):
        return Failure("GangSchedulerMissing", str(error))
    if isinstance(error, ChildError):
        return Failure("ChildRefused" if error.error.refused else "ApiError", str(error))
    if isinstance(error, KubeError):
        return Failure("ApiError", f"{error.method} {error.path}: {error.describe()}")
    if isinstance(error, HTTPError | ConnectionError):  # the connection to the API server
        return Failure("ApiError", f"API server unreachable: {error}")
    return describe_exception(error)


def what_was_written(written: Mapping[str, Any] | None) -> dict[str, Any]:
    """Pass's written_version and written_status from the adaptation a status write left
    (the API server's answer; None: nothing written)."""
    version = _version(written)
    status = (written or {}).get("status") if version is not None else None
    return {"written_version": version, "written_status": status}


def report_failure(
    kube: Kube, body: Mapping[str, Any], error: BaseException, failures: int, retry_in: float
) -> dict[str, Any] | None:
    """Say that a pass failed where a user looks: a Warning Event on the adaptation and its
    Reconciled condition (core.failed_pass). Best effort: when the API server cannot take
    these either, the log has it. Returns the adaptation as the status write left it."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    status, event = failed_pass(
        body.get("status") or {}, describe_failure(error), failures, retry_in, time.time()
    )
    try:
        kube.create(event_manifest(body, event.type, event.reason, event.message))
    except Exception:
        logger.warning("%s/%s: could not post the Event %s", namespace, name, event.reason)
    patch: dict[str, Any] = {"conditions": status["conditions"]}
    if not (body.get("status") or {}).get("phase"):
        patch["phase"] = status["phase"]  # Pending, rather than no phase at all
    try:
        written = kube.merge_patch(f"{adaptation_path(namespace, name)}/status", {"status": patch})
    except Exception:
        logger.warning("%s/%s: could not write the status of a failed pass", namespace, name)
        return None
    return dict(written) if written else None


class GangSchedulerMissing(Exception):
    """The API server has no PodGroups of the spec's gang scheduler (HTTP 404 on their
    collection): its CRD is not installed. Said until it is, with the pass's backoff."""

    def __init__(self, manifest: Mapping[str, Any]) -> None:
        api, name = manifest["apiVersion"], manifest["metadata"]["name"]
        super().__init__(
            f"creating PodGroup {name}: the cluster serves no {api} PodGroups (is the gang "
            "scheduler of spec.resources.gangScheduling.scheduler installed?); install it, "
            "or remove spec.resources.gangScheduling"
        )


def _create(kube: Kube, manifest: Mapping[str, Any], owner: Owner) -> dict[str, Any] | None:
    """Create a child; returns it as the API server answered, None when it existed. One
    that exists (HTTP 409) counts as created only when it is ours (its controller's uid is
    the adaptation's): a predecessor's is deleted and the pass stops
    (PredecessorInTheWay); anyone else's fails it (NotOurs)."""
    kind, child_name = manifest["kind"], manifest["metadata"]["name"]
    # From the manifest's own apiVersion: a PodGroup's group is its scheduler's.
    path = f"{manifest_collection_path(manifest)}/{child_name}"
    with _writing("creating", kind, child_name):
        try:
            created = kube.create(manifest)
        except KubeError as error:
            if kind == "PodGroup" and error.status == 404:
                raise GangSchedulerMissing(manifest) from error
            raise
        if created is not None:
            logger.info("%s/%s: created %s %s", owner.namespace, owner.name, kind, child_name)
            return created
        if kind == "Secret":
            # Named for our uid (endpoint_secret_name), so it is ours; and the operator may
            # not read Secrets to check.
            return None
        existing = kube.get(path)
    if existing is None:  # gone since: the next pass creates it
        raise PredecessorInTheWay(Child(kind, child_name))
    whose = ownership(existing, owner)
    if whose == "ours":
        return None
    if whose == "stranger":
        raise NotOurs(kind, child_name, existing)
    with _writing("deleting", kind, child_name):
        kube.delete(path, uid=(existing.get("metadata") or {}).get("uid"))
    logger.info(
        "%s/%s: deleting %s %s, an earlier adaptation's",
        owner.namespace,
        owner.name,
        kind,
        child_name,
    )
    raise PredecessorInTheWay(Child(kind, child_name))


def apply(
    kube: Kube,
    body: Mapping[str, Any],
    observed: Observed,
    outcome: Outcome,
    token: str | None = None,
) -> Applied:
    """Make the world match core's outcome. The status goes last: it is the commit point,
    so whoever sees a new phase also finds its children, directive and Events; a pass that
    dies before it is repeated by the next one (an Event may then appear twice, never zero
    times). Returns what was written (Applied).
    """
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    owner = Owner.from_body(dict(body))
    for child in outcome.delete:
        with _writing("deleting", child.kind, child.name):
            propagation = "Foreground" if child.foreground else "Background"
            if kube.delete(child_path(namespace, child), propagation, uid=child.uid):
                logger.info("%s/%s: deleting %s", namespace, name, child)
    created = []
    for manifest in children(outcome, owner, token):
        made = _create(kube, manifest, owner)
        if made is not None and manifest["kind"] in REMEMBERED_KINDS:
            created.append(made)
    configmap_version = None
    if outcome.directive is not None and outcome.directive != observed.directive:
        data = {DIRECTIVE_KEY: outcome.directive.model_dump_json()}
        with _writing("patching", "ConfigMap", control_configmap_name(owner)):
            configmap_version = _version(
                kube.merge_patch(control_path(namespace, name), {"data": data})
            )
    # An Event the API server fails to take fails the pass: the status is not written, and the
    # next pass derives the decision's Event again from it (core: _Run._decisions).
    for event in outcome.events:
        kube.create(event_manifest(body, event.type, event.reason, event.message, event.key))
    current = body.get("status") or {}
    # Core's status is complete, with None for fields to drop: a merge patch writes it as
    # is. Skipped when it would change nothing, so an idle pass writes nothing.
    done = Applied(
        configmap_version=configmap_version,
        created=tuple(created),
        deleted=tuple((c.kind, c.name) for c in outcome.delete),
    )
    if merged(current, outcome.status) == current:
        return done
    written = kube.merge_patch(
        f"{adaptation_path(namespace, name)}/status", {"status": outcome.status}
    )
    return replace(done, adaptation=written)


def reconcile_pass(
    kube: Kube,
    body: Mapping[str, Any],
    found: Children,
    options: Options,
    configmap_version: str | None = None,
) -> Pass:
    """One pass over the adaptation `body` as the driver's watch last delivered it;
    `configmap_version` as the previous pass left it (Pass.configmap_version)."""
    if body["metadata"].get("deletionTimestamp"):
        return Pass(phase=None)
    if settled(body):
        # Core answers a settled adaptation with its status as is: skip the reads.
        return Pass(phase=(body.get("status") or {}).get("phase"), settled=True)
    observation = observe(kube, body, found, options, configmap_version)
    observed, errors, url = observation.observed, observation.errors, observation.rank0_url
    seen = len(observed.evaluations.evaluations) if observed.evaluations is not None else None
    queueing = Queueing(default_name=options.default_queue_name)
    outcome = reconcile(body, observed, policy=options.policy, queueing=queueing)
    try:
        applied = apply(kube, body, observed, outcome, options.token(Owner.from_body(dict(body))))
    except PredecessorInTheWay as found_late:
        # Nothing of this pass is committed (no status): the next one finds the leftover
        # (or finds it gone) and decides again, REQUEUE_DELETING from now: a leftover no
        # watch selects wakes nothing when it goes. A new adaptation has no phase yet, and
        # Pass's None would say it is gone (no timed pass): Pending, as core would write.
        logger.info("%s; the next pass waits for it", found_late)
        return Pass(
            phase=(body.get("status") or {}).get("phase") or "Pending",
            requeue_after=REQUEUE_DELETING,
            errors=tuple(errors),
            rank0_url=url,
            evaluations_seen=seen,
        )
    return Pass(
        phase=outcome.status.get("phase"),
        events=tuple(outcome.events),
        requeue_after=outcome.requeue_after,
        errors=tuple(errors),
        **what_was_written(applied.adaptation),
        settled=settled({**body, "status": outcome.status}),
        rank0_url=url,
        evaluations_seen=seen,
        stopping=outcome.status.get("stop") is not None,
        configmap_version=applied.configmap_version or observation.configmap_version,
        created=applied.created,
        deleted=applied.deleted,
    )


__all__ = [
    "Applied",
    "ChildError",
    "Children",
    "GangSchedulerMissing",
    "KubeError",
    "NotOurs",
    "Observation",
    "Options",
    "Pass",
    "PredecessorInTheWay",
    "apply",
    "describe_failure",
    "observe",
    "reconcile_pass",
    "report_failure",
]
