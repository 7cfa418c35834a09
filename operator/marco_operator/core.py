"""reconcile(): the whole control logic of one AsrAdaptation, as a pure function.

Level-triggered, in the manner of controller-runtime: whatever woke us, read
the object and what exists now (`Observed`), compute what should exist and
happen, and return it (`Outcome`) in the plan's own terms: the stages to start
(`StageStart`: stage, job name, command, nodes, Kueue queue), the directive in
force, the objects to delete, Events, the status and when to look again. Neither
Kubernetes objects nor processes: the kopf driver turns a `StageStart` into a
Job (with its ConfigMap and Service, resources.py), the local driver into a
subprocess. Both name a stage's job with `names.job_name`. Safe to call any
number of times: jobs have deterministic names, and every decision is a
function of the evaluation history and the directive in force, so a restarted
operator reaches the same decisions instead of taking them twice.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from marco_contract.formats import Directive, Evaluation, EvaluationHistory, StageResult
from marco_contract.layout import STAGES, TRIALS_STAGE, Layout
from marco_contract.status import (
    TERMINAL_PHASES,
    AsrAdaptationStatus,
    CycleRecord,
    Family,
    StageStatus,
    StopRecord,
    TrialRecord,
)
from marco_operator import trials
from marco_operator.api import (
    AsrAdaptationSpec,
    cluster_problem,
    describe_error,
    gang_queue_problem,
    name_problem,
    parse_spec,
)
from marco_operator.conditions import QUEUED, derive_conditions, iso_time, set_condition
from marco_operator.memory_check import INSUFFICIENT_MEMORY, memory_refusal, stage_estimate
from marco_operator.names import job_name
from marco_operator.plan import (
    PHASE_OF_STAGE,
    StageCommand,
    enabled_stages,
    stage_command,
    trial_command,
)
from marco_operator.policy import Policy
from marco_operator.resources import cluster_layout
from marco_operator.schedule import (
    ScheduleSettings,
    best_evaluation,
    cycle_sigma,
    cycle_wers,
    decide,
    family_from_name,
    initial_learning_rate,
    known_decoder_layers,
    lr_bounds,
    window_evaluations,
)
from marco_operator.storage import VOLUME_NOT_FOUND, Claim, claim_refusal

#: Seconds until the next look while a stage runs (the driver's timer may be faster).
REQUEUE_RUNNING = 10.0
DEFAULT_FAMILY: Family = "encoder-decoder"
#: Reason (condition and Event) of a spec whose image or ServiceAccount the operator's
#: policy does not allow.
NOT_ALLOWED = "NotAllowed"

#: The condition that says whether the driver's last pass went through: False (reason
#: ChildRefused, ApiError or ReconcileError) after a pass that failed, True (Recovered)
#: from the next one that did not. Absent while no pass ever failed.
RECONCILED = "Reconciled"
#: Seconds between passes after failed ones: RETRY_FIRST after the first failure, doubling
#: with each failure in a row, at most RETRY_CAP (retry_delay); a pass that goes through
#: resets it.
RETRY_FIRST = 1.0
RETRY_CAP = 300.0
#: The reason of a Job's Failed condition when it ran past activeDeadlineSeconds (the
#: local driver uses it too).
DEADLINE_EXCEEDED = "DeadlineExceeded"
#: The longest condition or Event message written (the API server caps Events at 1 KiB).
MAX_MESSAGE = 1024
#: Seconds until the next look while objects in the way are being deleted (a predecessor's
#: children, a retried stage's failed Job): the driver's watch may not see every kind go.
REQUEUE_DELETING = 2.0
#: Seconds until a run waiting for its PersistentVolumeClaim (VolumeNotFound) looks again:
#: no watch tells the operator when a claim appears.
REQUEUE_CLAIM = 10.0
#: The annotation that asks a cluster run to retry: each new value retries a Failed run once
#: (core.retry_failed), and is recorded in status.retryToken so it is never replayed.
RETRY_ANNOTATION = "asr.marco.dev/retry"
#: Condition reason while the train Job of a stop the trainer did not honour is deleted.
STOP_ENFORCED = "StopEnforced"


@dataclass(frozen=True)
class Queueing:
    """Whether a driver's stage jobs can wait in a queue, and the operator's default queue.

    In a cluster, stage Jobs go to Kueue's LocalQueue `spec.queueName`, else `default_name`
    (the chart's kueue.defaultQueueName); with neither they start at once. The local driver
    has no queue (`NO_QUEUES`): its processes start at once whatever the spec says.
    """

    enabled: bool = True
    default_name: str | None = None

    def queue_of(self, spec: AsrAdaptationSpec) -> str | None:
        return (spec.queue_name or self.default_name) if self.enabled else None


NO_QUEUES = Queueing(enabled=False)


@dataclass(frozen=True)
class JobState:
    name: str
    stage: str
    complete: bool = False
    failed: bool = False
    failure_reason: str | None = None
    suspended: bool = False
    active: int = 0
    result: StageResult | None = None
    trial: int | None = None  # the LR trial's index, for the trials stage's jobs
    #: What is wrong with its pods, in their own words (reconciler.job_trouble): why they
    #: wait (Unschedulable, ImagePullBackOff...) or what killed one (OOMKilled); None if
    #: nothing is, or the driver cannot tell.
    trouble: str | None = None
    #: The Kueue LocalQueue it was created for (its kueue.x-k8s.io/queue-name label).
    queue: str | None = None
    #: Its metadata.uid: a delete names it, so that it never deletes a newer Job of the
    #: same name (one created after this pass looked).
    uid: str | None = None


@dataclass(frozen=True)
class Child:
    """A child object by kind (Job, ConfigMap, Service) and name."""

    kind: str
    name: str
    #: Deleted with foreground propagation: the object stays (being deleted) until its
    #: dependents, a Job's pods, are gone, so that whoever waits for it waits for them too.
    foreground: bool = False
    #: The uid observed: a delete goes only to that object (the API server's precondition;
    #: 409 when another object has the name now). None: whatever has the name.
    uid: str | None = None

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"


@dataclass(frozen=True)
class Observed:
    jobs: dict[str, JobState] = field(default_factory=dict)  # by stage
    #: The trials stage's jobs, by trial index (one job per candidate LR).
    trials: dict[int, JobState] = field(default_factory=dict)
    evaluations: EvaluationHistory | None = None
    directive: Directive | None = None
    now: float = field(default_factory=time.time)
    #: Objects with this adaptation's names and labels that an earlier adaptation of the
    #: same name left (another owner uid): never read, deleted, waited for.
    leftovers: tuple[Child, ...] = ()
    #: The spec's PersistentVolumeClaims by name, as the cluster driver read them before the
    #: run's first Job (storage.claim_refusal judges them); None when nobody looked: the
    #: local driver (folders, no claims) and a started run, whose Jobs already mount them.
    claims: Mapping[str, Claim] | None = None


@dataclass
class Event:
    type: str
    reason: str
    message: str
    #: The decision it says (e.g. "cycle-1"), for an Event said again until it lands: the
    #: driver names it after the key, so a repeat of one that landed is the same object.
    key: str | None = None


@dataclass(frozen=True)
class StageStart:
    """A stage to run, in the plan's terms; each driver makes its own object of it."""

    stage: str
    job_name: str  # names.job_name: the status's jobName, the Job's or the process's name
    command: StageCommand  # its shards (completion indexes) and whether it runs distributed
    nodes: int = 1  # machines a distributed stage spans (torchrun's --nnodes)
    #: Reads the directive in force (Outcome.directive), which must exist before it starts.
    steered: bool = False
    #: Seconds it may run (spec.resources.stageDeadlineSeconds): a Job's activeDeadlineSeconds.
    deadline_seconds: int | None = None
    #: The Kueue LocalQueue it waits in (Queueing): its Job is created suspended, with the
    #: queue's label, and Kueue unsuspends it on admission. None: it starts at once.
    queue: str | None = None


@dataclass
class Outcome:
    status: dict[str, Any]
    #: The validated spec, for drivers that size what they start from it; None when invalid.
    spec: AsrAdaptationSpec | None = None
    start: list[StageStart] = field(default_factory=list)
    directive: Directive | None = None
    #: Objects to delete (in the background unless `Child.foreground`: a Job's pods follow
    #: it), before anything starts. The operator never suspends a Job: Kueue may manage it.
    delete: list[Child] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None


def settled(body: Mapping[str, Any]) -> bool:
    """Nothing left to do for this generation: a terminal phase, or a spec found invalid,
    and no retry asked for that was not acted on yet.

    Both drivers stop looking at a settled adaptation; a new generation (the spec
    edited) or a new retry token unsettles it, and core reconciles it again.
    """
    status = body.get("status") or {}
    generation = (body.get("metadata") or {}).get("generation")
    finished = status.get("phase") in TERMINAL_PHASES or status.get("phase") == "Invalid"
    return finished and status.get("observedGeneration") == generation and not retry_asked(body)


def retry_token(body: Mapping[str, Any]) -> str | None:
    """The value of the retry annotation (RETRY_ANNOTATION), None when it is unset or empty."""
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    token = annotations.get(RETRY_ANNOTATION)
    return str(token) if token else None


def retry_asked(body: Mapping[str, Any]) -> bool:
    """A retry token not acted on yet: set, and not the one status.retryToken records."""
    token = retry_token(body)
    return token is not None and token != (body.get("status") or {}).get("retryToken")


def retry_failed(status: Mapping[str, Any], now: float) -> Outcome:
    """A Failed status made to resume from the stage that failed; any other as it is.

    A Failed run stays Failed (`settled`) until someone asks for it again: a
    retry is a decision, not a reconcile's, so that a failure that repeats is
    not started over and over. The failed stage goes back to Pending (a failed
    trials stage with its failed trials), the phase to Pending; what succeeded
    stays done. The next reconcile then starts that stage as if its Job had
    vanished: the train stage under the directive in force, from its last
    checkpoint.
    """
    current = AsrAdaptationStatus.model_validate(status)
    outcome = Outcome(status=dump_status(current))
    if current.phase != "Failed":
        return outcome
    failed = [name for name, record in current.stages.items() if record.state == "Failed"]
    for name in failed:
        current.stages[name] = StageStatus(job_name=current.stages[name].job_name)
    if TRIALS_STAGE in failed:
        current.trials = [
            TrialRecord(index=t.index, learning_rate=t.learning_rate, job_name=t.job_name)
            if t.state == "Failed"
            else t
            for t in current.trials
        ]
    stages = ", ".join(failed) or "the run"
    message = f"retrying {stages} after: {current.message or 'no message'}"
    current.phase = "Pending"
    current.message = None
    set_condition(current, "Ready", "False", "Retrying", message, now)
    current.conditions = derive_conditions(current, now)
    outcome.status = dump_status(current)
    outcome.events.append(Event("Normal", "Retrying", message))
    return outcome


def retry_delay(failures: int, first: float = RETRY_FIRST, cap: float = RETRY_CAP) -> float:
    """Seconds before the next pass after `failures` failed passes in a row (1 or more):
    `first`, doubling with every failure, never above `cap`."""
    if failures < 1:
        raise ValueError(f"failures must be at least 1, got {failures}")
    # The exponent is bounded: 2**63 · first is past any cap, and a float cannot hold 2**2000.
    return min(cap, first * 2.0 ** min(failures - 1, 63))


@dataclass(frozen=True)
class Failure:
    """Why a driver's pass failed, in a user's words (the drivers classify their errors)."""

    #: ChildRefused (the API server refused a child: 4xx), ApiError (it could not serve a
    #: request: 5xx, a conflict, no connection), ReconcileError (an exception in the pass).
    reason: str
    message: str


def describe_exception(error: BaseException) -> Failure:
    """An exception in a pass, as a ReconcileError a user can read (a pydantic refusal
    names the model, the field and the value, e.g. a learning rate Eq. 1 rounded to 0)."""
    if isinstance(error, ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(part) for part in e['loc']) or error.title}: {e['msg']}"
            f" (got {e['input']!r})"
            for e in error.errors()[:3]
        )
        return Failure("ReconcileError", f"reconcile failed: {error.title}: {problems}")
    return Failure("ReconcileError", f"reconcile failed: {type(error).__name__}: {error}")


def failed_pass(
    status: Mapping[str, Any], failure: Failure, failures: int, retry_in: float, now: float
) -> tuple[dict[str, Any], Event]:
    """The status after a pass that failed, and the Warning Event that says so.

    Only the Reconciled condition changes (False, the failure's reason and message, and
    when the next try comes): what the pass decided was not applied, so the rest of the
    status stays as the last pass that went through left it. The first pass that goes
    through again turns the condition True (`_Run.finish`).
    """
    try:
        current = AsrAdaptationStatus.model_validate(status)
    except ValidationError:
        current = AsrAdaptationStatus()  # unreadable: the condition is what can be said
    times = "once" if failures == 1 else f"{failures} times in a row"
    message = f"{failure.message} (failed {times}; next try in {retry_in:g} s)"
    message = _clip(message)
    set_condition(current, RECONCILED, "False", failure.reason, message, now)
    current.conditions = derive_conditions(current, now)
    return dump_status(current), Event("Warning", failure.reason, message)


def _clip(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1] + "…"


def dump_status(status: AsrAdaptationStatus) -> dict[str, Any]:
    # None stays in: under a merge patch it deletes the field, so stale values go.
    return status.model_dump(by_alias=True, mode="json")


class _Run:
    """One reconcile pass: the mutable working state, discarded afterwards."""

    def __init__(self, body: Mapping[str, Any], observed: Observed) -> None:
        self.body = body
        self.observed = observed
        self.now = observed.now
        self.old = AsrAdaptationStatus.model_validate(body.get("status") or {})
        self.status = self.old.model_copy(deep=True)
        self.status.observed_generation = body.get("metadata", {}).get("generation")
        self.name: str = body["metadata"]["name"]
        self.outcome = Outcome(status={})
        #: The Kueue LocalQueue of the Jobs this pass creates (Queueing.queue_of); None: none.
        self.queue: str | None = None

    def event(self, type_: str, reason: str, message: str, key: str | None = None) -> None:
        self.outcome.events.append(Event(type_, reason, message, key))

    def finish(self) -> Outcome:
        status = self.status
        self._recovered()
        self._decisions()
        if status.phase != self.old.phase:
            warning = status.phase in ("Failed", "Invalid")
            detail = f": {status.message}" if status.message else ""
            change = Event(
                "Warning" if warning else "Normal",
                "PhaseChanged",
                f"{self.old.phase} → {status.phase}{detail}",
            )
            # Read in order: what finished, the phase it leads to, then what started.
            events = self.outcome.events
            starts = [i for i, e in enumerate(events) if e.reason == "StageStarted"]
            events.insert(starts[0] if starts else len(events), change)
        # Running, Succeeded, Failed, Queued: from the status this pass leaves.
        status.conditions = derive_conditions(status, self.now)
        self.outcome.status = dump_status(status)
        return self.outcome

    def _decisions(self) -> None:
        """The Events of the schedule's decisions, derived from the status: a cycle it now
        records and the last pass's did not, a stop it now records. The directive (or the
        stopped Job) may already be in force when the pass that decided it fails before its
        status is written, an Event refused by the API server among the causes; the next
        pass, finding the decision in force but not in the status, says it then. The driver
        counts an Event once its pass went through, so each decision counts once."""
        old = {record.cycle for record in self.old.cycles}
        said = []
        for record in self.status.cycles:
            if record.cycle in old:
                continue
            lr = f"cycle {record.cycle} at LR {record.learning_rate:.3g} ({record.reason})"
            reason = "LearningRateSet" if record.cycle == 0 else "LearningRateChanged"
            said.append(Event("Normal", reason, lr, key=f"cycle-{record.cycle}"))
        if self.status.stop is not None and self.old.stop is None:
            said.append(Event("Normal", "EarlyStop", self.status.stop.reason, key="stop"))
        # Read in order: what the schedule decided, then the stage it starts (if any).
        events = self.outcome.events
        starts = [i for i, e in enumerate(events) if e.reason == "StageStarted"]
        at = starts[0] if starts else len(events)
        events[at:at] = said

    def _recovered(self) -> None:
        """A pass that got this far goes through unless the driver fails to apply it (and
        then it writes no status): a Reconciled False from a failed pass turns True."""
        failed = next(
            (c for c in self.old.conditions if c.type == RECONCILED and c.status == "False"),
            None,
        )
        if failed is None:
            return
        message = _clip(f"passes go through again after {failed.reason}: {failed.message}")
        set_condition(self.status, RECONCILED, "True", "Recovered", message, self.now)
        self.event("Normal", "Recovered", message)


def reconcile(
    body: Mapping[str, Any],
    observed: Observed,
    layout: Layout | None = None,
    policy: Policy | None = None,
    queueing: Queueing | None = None,
) -> Outcome:
    """The desired children, directive and status of one AsrAdaptation, given what exists.

    `layout` says where stage processes see data and outputs: the pod mounts by
    default, local directories for the local driver. `policy` is what the operator
    allows (images, ServiceAccounts); None allows anything. `queueing` says whether
    stage jobs may wait in a Kueue queue and the operator's default one (None: Kueue's
    queue `spec.queueName` when set, no default).
    """
    run = _Run(body, observed)
    # The local driver brings its own layout (folders for the volumes); None is a cluster.
    cluster = layout is None
    if retry_asked(body) and not _retry(run):
        return run.finish()
    status = run.status
    if status.phase in TERMINAL_PHASES:
        return run.finish()
    if observed.leftovers:
        _await_predecessor(run)
        return run.finish()
    queueing = queueing or Queueing()
    spec = _validated_spec(run, cluster, queueing)
    if spec is None or not _allowed(run, spec, policy) or not _claims_ready(run, spec):
        return run.finish()
    run.outcome.spec = spec
    if status.model is not None:
        # Recomputed each pass: resources may change after the start (MUTABLE_AFTER_START).
        status.memory = stage_estimate(spec, status.model, "train")
    run.queue = queueing.queue_of(spec)
    layout = layout or cluster_layout(spec, run.name)
    stages = enabled_stages(spec)
    for stage in STAGES:
        if stage not in stages:
            status.stages[stage] = StageStatus(state="Skipped")
    for stage in stages:
        record = status.stages.setdefault(stage, StageStatus())
        # The trials stage has a job per trial, each named in status.trials.
        record.job_name = None if stage == TRIALS_STAGE else job_name(run.name, stage)
        if stage == "train":
            _record_directive(run)
        if record.state == "Succeeded":
            continue  # remembered in status: the Job may have been cleaned up since
        if stage == TRIALS_STAGE:
            untouched = not run.observed.trials and all(t.state == "Pending" for t in status.trials)
            if untouched and not _memory_fits(run, spec, stage, cluster):
                return run.finish()
            if not _run_trials(run, spec, layout):
                return run.finish()
            continue
        job = observed.jobs.get(stage)
        if job is None and stage == "train" and _stop_overdue(run, spec):
            # Its Job deleted by a pass whose status was not written: the stop stands.
            _enforce_stop(run, spec, None)
            return run.finish()
        if job is None:
            if _stopped_train_going(run):
                return run.finish()
            if stage == "train" and not _memory_fits(run, spec, stage, cluster):
                return run.finish()
            _start_stage(run, spec, layout, stage)
            return run.finish()
        _unsaid_start(run, stage)
        if job.failed:
            _fail(run, spec, stage, job)
            return run.finish()
        if job.complete:
            _complete_stage(run, spec, stage, job)
            continue
        if job.suspended and not (stage == "train" and _stop_overdue(run, spec)):
            _queued(run, stage, job)
            return run.finish()
        status.phase = PHASE_OF_STAGE[stage]
        before = record.message
        if before == _queued_message(run, job):  # admitted: what it waited for is over
            before = status.message = None
        record.state = "Running"
        record.start_time = record.start_time or iso_time(run.now)
        record.message = _trouble(run, before, job, f"{stage} Job {job.name}")
        detail = (
            f"{stage} running" if job.trouble is None else f"{stage} Job {job.name}: {job.trouble}"
        )
        set_condition(status, "Ready", "False", f"{status.phase}", detail, run.now)
        if stage == "train":
            _steer_training(run, spec, job)
        else:
            run.outcome.requeue_after = REQUEUE_RUNNING
        return run.finish()
    status.phase = "Succeeded"
    status.message = _summary(status)
    set_condition(status, "Ready", "True", "Succeeded", status.message, run.now)
    return run.finish()


def _retry(run: _Run) -> bool:
    """Act on a new retry token (RETRY_ANNOTATION); False when the pass ends here.

    A Failed run is retried (retry_failed) once the Jobs that failed are gone: first they
    are deleted, and the token stays unrecorded (the run Failed, Ready Retrying) until no
    pass sees them any more, so that none is read as the retried stage's fresh failure.
    Any other phase records the token and says why nothing was retried.
    """
    token = retry_token(run.body)
    status = run.status
    if status.phase != "Failed":
        status.retry_token = token
        run.event(
            "Normal",
            "RetryIgnored",
            f"{RETRY_ANNOTATION}={token!r}: the run is {status.phase}; only a Failed run "
            "is retried",
        )
        return True
    failed = [
        Child("Job", job.name, uid=job.uid)
        for stage, record in status.stages.items()
        if record.state == "Failed" and (job := run.observed.jobs.get(stage)) is not None
    ]
    if status.stages.get(TRIALS_STAGE, StageStatus()).state == "Failed":
        failed += [
            Child("Job", job.name, uid=job.uid)
            for trial in status.trials
            if trial.state == "Failed" and (job := run.observed.trials.get(trial.index))
        ]
    if failed:
        run.outcome.delete.extend(failed)
        names = ", ".join(str(child) for child in failed)
        message = f"retry {token!r}: waiting for the failed {names} to be deleted"
        set_condition(status, "Ready", "False", "Retrying", message, run.now)
        run.outcome.requeue_after = REQUEUE_DELETING
        return False
    retried = retry_failed(dump_status(status), run.now)
    run.status = AsrAdaptationStatus.model_validate(retried.status)
    run.status.retry_token = token
    run.outcome.events.extend(retried.events)
    return True


def _await_predecessor(run: _Run) -> None:
    """Objects of an earlier adaptation of this name are in the way: delete them (again:
    idempotent) and start nothing until they are gone, saying so."""
    status = run.status
    leftovers = run.observed.leftovers
    run.outcome.delete.extend(leftovers)
    names = ", ".join(str(child) for child in leftovers)
    message = (
        f"waiting for what an earlier AsrAdaptation named {run.name} left to be deleted: {names}"
    )
    before = next((c for c in run.old.conditions if c.type == "Ready"), None)
    if before is None or before.reason != "WaitingForPredecessor":
        run.event("Normal", "WaitingForPredecessor", message)
    status.message = message
    set_condition(status, "Ready", "False", "WaitingForPredecessor", message, run.now)
    run.outcome.requeue_after = REQUEUE_DELETING


def _started(run: _Run) -> None:
    """Mark the run started (its first Job): from here on the spec is immutable but for the
    fields safe to change (api.MUTABLE_AFTER_START; the CRD's transition rule)."""
    if run.status.started_generation is None:
        run.status.started_generation = run.status.observed_generation


def _trouble(run: _Run, before: str | None, job: JobState, what: str) -> str | None:
    """The message of a stage (or trial) whose Job runs: what is wrong with its pods, if
    anything. A Warning Event when trouble appears; not as its words change (an image pull
    alternates between ErrImagePull and ImagePullBackOff), only the status follows them.
    A Job left without pods keeps what its last ones said (they may have been deleted on
    the way to its failure), until new ones say something else or run."""
    if job.trouble is None and not job.active:
        return before
    if job.trouble is not None and before is None:
        run.event("Warning", "PodTrouble", f"{what}: {job.trouble}")
    return job.trouble


def _failure_reason(spec: AsrAdaptationSpec, stage: str, job: JobState, before: str | None) -> str:
    """Why a Job failed: its Failed condition, and what its pods went through (as they are
    now, or as the status last saw them: a Job past its deadline has its pods deleted)."""
    reason = job.failure_reason or "unknown reason"
    if reason.startswith(DEADLINE_EXCEEDED):
        field = f"spec.resources.stageDeadlineSeconds.{stage}"
        reason += (
            f" (its deadline, {field}, is {spec.resources.stage_deadline_seconds.of(stage)} s)"
        )
    seen = job.trouble or before
    if seen and seen not in reason:
        reason = f"{reason}; {seen}"
    return reason


def _validated_spec(run: _Run, cluster: bool, queueing: Queueing) -> AsrAdaptationSpec | None:
    """The spec, or None with phase Invalid (reason InvalidSpec) and a Warning Event. On a
    cluster also what only a cluster needs (api.cluster_problem: the shared volume), as the
    CRD's CEL rule says it; the local driver maps volumes to folders and needs no claim.
    And gang scheduling under the operator's default queue, which no CRD rule can see."""
    status = run.status
    name = run.name
    try:
        problem = name_problem(name)
        if problem:
            raise ValueError(problem)
        spec = parse_spec(dict(run.body.get("spec") or {}))
        problem = cluster_problem(spec) if cluster else None
        problem = problem or gang_queue_problem(spec, queueing.queue_of(spec))
        if problem:
            raise ValueError(problem)
        return spec
    except ValidationError as error:
        message = describe_error(error)
    except ValueError as error:
        message = str(error)
    status.phase = "Invalid"
    status.message = message
    set_condition(status, "Ready", "False", "InvalidSpec", message, run.now)
    if run.old.message != message or run.old.phase != "Invalid":
        run.event("Warning", "InvalidSpec", message)
    return None


def _allowed(run: _Run, spec: AsrAdaptationSpec, policy: Policy | None) -> bool:
    """False, with phase Invalid and reason NotAllowed, for a spec the operator's policy
    refuses: checked on every pass before any stage starts, so nothing runs an image or
    ServiceAccount the operator was not told to allow."""
    refusal = policy.refusal(spec) if policy is not None else None
    if refusal is None:
        return True
    _refuse(run, NOT_ALLOWED, refusal)
    return False


def _refuse(run: _Run, reason: str, refusal: str) -> None:
    """Phase Invalid with Ready False for `reason`, and one Warning Event (again only when
    the refusal changed): a spec edit is what lets the next pass go on."""
    status = run.status
    status.phase = "Invalid"
    status.message = refusal
    set_condition(status, "Ready", "False", reason, refusal, run.now)
    if run.old.message != refusal or run.old.phase != "Invalid":
        run.event("Warning", reason, refusal)


def _claims_ready(run: _Run, spec: AsrAdaptationSpec) -> bool:
    """False when the claims the driver read before the first Job cannot serve the run
    (storage.claim_refusal), saying why in Ready and a Warning Event; nothing starts.

    A missing claim (VolumeNotFound) keeps the run Pending and is looked for again: it is
    often created after the adaptation (one `kubectl apply` of a folder, a chart), as a pod
    waits for its missing claim. A claim without ReadWriteMany under concurrent pods
    (VolumeNotShared) makes the run Invalid: a claim's access modes never change, so the
    fix is a spec edit (another claim, or no concurrent pods), which reconciles again."""
    claims = run.observed.claims
    if claims is None or run.status.started_generation is not None:
        return True
    refusal = claim_refusal(spec, claims)
    if refusal is None:
        return True
    reason, message = refusal
    status = run.status
    old_ready = next((c for c in run.old.conditions if c.type == "Ready"), None)
    status.phase = "Pending" if reason == VOLUME_NOT_FOUND else "Invalid"
    status.message = message
    set_condition(status, "Ready", "False", reason, message, run.now)
    if old_ready is None or (old_ready.reason, old_ready.message) != (reason, message):
        run.event("Warning", reason, message)
    if reason == VOLUME_NOT_FOUND:
        run.outcome.requeue_after = REQUEUE_CLAIM
    return False


def _memory_fits(run: _Run, spec: AsrAdaptationSpec, stage: str, cluster: bool) -> bool:
    """False, with phase Invalid, reason InsufficientMemory and a Warning Event, when the
    estimate for `stage` (train or trials) exceeds what the spec gives its pods
    (memory_check.memory_refusal); checked before the stage's Job is created, once the
    baseline reported the model. A cluster only: a local run's resources bound nothing.
    Invalid, not Failed: raising spec.resources.memory or gpuMemory (editable after the
    start) lets the next pass go on."""
    dims = run.status.model
    if dims is None or not cluster:
        return True
    refusal = memory_refusal(spec, dims, stage)
    if refusal is None:
        return True
    _refuse(run, INSUFFICIENT_MEMORY, refusal)
    return False


def _family(run: _Run, spec: AsrAdaptationSpec) -> Family | None:
    """Spec, then the model's name, then what the baseline stage detected."""
    return spec.model.family or family_from_name(spec.model.source) or run.status.family


def _start_stage(run: _Run, spec: AsrAdaptationSpec, layout: Layout, stage: str) -> None:
    status = run.status
    family = _family(run, spec)
    learning_rate = None
    if stage == "train":
        family = family or DEFAULT_FAMILY
        status.family = family
        # With cycles already recorded the Job vanished mid-training (deleted, or a local
        # run interrupted): it starts again under the directive in force and the trainer
        # resumes from its checkpoint.
        if not status.cycles and not _first_cycle(run, spec, family):
            return
        directive = _current_directive(run)
        learning_rate = directive.learning_rate
        run.outcome.directive = directive
    command = stage_command(
        spec,
        stage,
        layout,
        name=run.name,
        family=family or "auto",
        learning_rate=learning_rate,
        baseline_wer=status.baseline_wer,
    )
    run.outcome.start.append(
        StageStart(
            stage=stage,
            job_name=job_name(run.name, stage),
            command=command,
            nodes=spec.resources.nodes if command.distributed else 1,
            steered=stage == "train",
            deadline_seconds=spec.resources.stage_deadline_seconds.of(stage),
            queue=run.queue,
        )
    )
    _started(run)
    name = job_name(run.name, stage)
    record = status.stages[stage]
    # A Job that vanished after its start was recorded starts again: said afresh, unkeyed.
    again = (before := run.old.stages.get(stage)) is not None and before.start_time is not None
    record.start_time = record.start_time or iso_time(run.now)
    _say_started(run, name, keyed=not again)
    if run.queue is not None:
        # Created suspended: Kueue admits it (the next pass finds it suspended, or running).
        _queued(run, stage, JobState(name=name, stage=stage, suspended=True, queue=run.queue))
        return
    status.phase = PHASE_OF_STAGE[stage]
    status.message = None
    record.state = "Running"
    set_condition(status, "Ready", "False", status.phase, f"{stage} Job created", run.now)
    run.outcome.requeue_after = REQUEUE_RUNNING


def _queued_message(run: _Run, job: JobState) -> str:
    """What a stage (or trial) whose Job is suspended waits for. The operator suspends none:
    with a queue it is Kueue's (not admitted yet, or preempted); without, someone's else."""
    queue = job.queue or run.queue
    if queue is None:
        return f"Job {job.name} is suspended (not by the operator): waiting for it to be resumed"
    return f"Job {job.name} waits for queue {queue} (Kueue admits it)"


def _say_queued(run: _Run, job: JobState, before: str | None) -> str:
    """What the suspended `job` waits for (_queued_message), said as its Queued Event unless
    `before` (the stage's or trial's message) said it already. Keyed by the Job, so a repeat
    lands on the same Event (a pass that failed after creating the Job, or a Job preempted
    and queued again)."""
    message = _queued_message(run, job)
    if before != message:
        run.event("Normal", QUEUED, message, key=f"queued-{job.name}")
    return message


def _queued(run: _Run, stage: str, job: JobState) -> None:
    """A stage whose Job is suspended: phase Queued, the stage Pending, until Kueue admits
    the Job (unsuspends it: the stage runs) or preempts it again (back here). The operator
    never touches `spec.suspend` of a Job."""
    status = run.status
    record = status.stages[stage]
    message = _say_queued(run, job, record.message)
    status.phase = QUEUED
    status.message = message
    record.state = "Pending"
    record.message = message
    set_condition(status, "Ready", "False", QUEUED, message, run.now)
    run.outcome.requeue_after = REQUEUE_RUNNING


def _say_started(run: _Run, job: str, detail: str = "", keyed: bool = True) -> None:
    """StageStarted for a Job this run created. Keyed by the Job and the retry token, so
    that the pass after one that created the Job but died before its status was written
    can say it again (_unsaid_start) without it appearing twice where it had landed."""
    token = run.status.retry_token
    key = f"started/{job}" + (f"/{token}" if token else "") if keyed else None
    run.event("Normal", "StageStarted", f"created Job {job}{detail}", key=key)


def _unsaid_start(run: _Run, stage: str) -> None:
    """A stage's Job found (running, or ended already) that the status never recorded as
    started: the pass that created it died before its status (and maybe its Events) went
    out. Say the start now, under the key that pass used: one that landed is not repeated."""
    before = run.old.stages.get(stage)
    if before is None or before.start_time is None:  # _start_stage records the creation
        _say_started(run, job_name(run.name, stage))


def _first_cycle(run: _Run, spec: AsrAdaptationSpec, family: str) -> bool:
    """Record cycle 0 and its LR in the status; False (and phase Invalid) if there is none."""
    status = run.status
    lr_min, lr_max = lr_bounds(spec.training, family)
    chosen = next((t for t in status.trials if t.chosen), None)
    if spec.trials.enabled and chosen is not None:
        # The trials measured what the rules below only predict, for either family
        # (for llm, Eq. 2 takes over from cycle 1: docs/method.md).
        reason = f"LR trials: best of {len(status.trials)}"
        _set_first_cycle(run, chosen.learning_rate, reason)
        return True
    try:
        learning_rate, reason = initial_learning_rate(
            family,
            lr_min,
            lr_max,
            baseline_wer=status.baseline_wer,
            decoder_layers=spec.model.decoder_layers or known_decoder_layers(spec.model.source),
            override=spec.training.initial_learning_rate,
        )
    except ValueError as error:
        status.phase = "Invalid"
        status.message = (
            f"spec.baseline.enabled: {error}; enable the baseline or set "
            "spec.training.initialLearningRate"
        )
        set_condition(status, "Ready", "False", "InvalidSpec", status.message, run.now)
        return False
    _set_first_cycle(run, learning_rate, reason)
    return True


def _set_first_cycle(run: _Run, learning_rate: float, reason: str) -> None:
    status = run.status
    status.cycle, status.learning_rate = 0, learning_rate
    status.cycles = [CycleRecord(cycle=0, learning_rate=learning_rate, reason=reason)]


def _run_trials(run: _Run, spec: AsrAdaptationSpec, layout: Layout) -> bool:
    """Start, watch and decide the LR trials; True once cycle 0's LR is chosen.

    Every trial's job is started at once: a cluster runs them side by side, the
    local driver one after another. A failed trial is recorded and the others
    still decide; when all fail the stage fails (no silent fallback to the
    default LR: whoever asked for trials should learn that none ran).
    """
    status = run.status
    record = status.stages[TRIALS_STAGE]
    family = _family(run, spec) or DEFAULT_FAMILY
    lr_min, lr_max = lr_bounds(spec.training, family)
    try:
        rates = trials.candidate_learning_rates(spec.trials, lr_min, lr_max)
    except ValueError as error:
        status.phase = "Invalid"
        status.message = str(error)
        set_condition(status, "Ready", "False", "InvalidSpec", status.message, run.now)
        if run.old.message != status.message or run.old.phase != "Invalid":
            run.event("Warning", "InvalidSpec", status.message)
        return False
    if [t.learning_rate for t in status.trials] != rates:
        status.trials = [
            TrialRecord(index=i, learning_rate=lr, job_name=job_name(run.name, TRIALS_STAGE, i))
            for i, lr in enumerate(rates)
        ]
    for trial in status.trials:
        if trial.state in ("Succeeded", "Failed"):
            continue  # remembered in status: the Job may have been cleaned up since
        job = run.observed.trials.get(trial.index)
        trial_lr = f" (LR trial at {trial.learning_rate:.3g})"
        if job is not None and not any(
            (t.index, t.learning_rate) == (trial.index, trial.learning_rate) for t in run.old.trials
        ):
            # Created by a pass that died before its status: its start is said now (_say_started).
            _say_started(run, job.name, trial_lr)
        if job is None:
            command = trial_command(
                spec, layout, trial.index, trial.learning_rate, name=run.name, family=family
            )
            name = job_name(run.name, TRIALS_STAGE, trial.index)
            deadline = spec.resources.stage_deadline_seconds.of(TRIALS_STAGE)
            run.outcome.start.append(
                StageStart(
                    stage=TRIALS_STAGE,
                    job_name=name,
                    command=command,
                    deadline_seconds=deadline,
                    queue=run.queue,
                )
            )
            trial.state = "Pending"  # created, not running yet
            _started(run)
            _say_started(run, name, trial_lr)
            if run.queue is not None:  # created suspended: Kueue admits it
                created = JobState(name=name, stage=TRIALS_STAGE, suspended=True, queue=run.queue)
                trial.message = _say_queued(run, created, trial.message)
        elif job.failed:
            trial.state = "Failed"
            trial.message = _failure_reason(spec, TRIALS_STAGE, job, trial.message)
            run.event(
                "Warning",
                "TrialFailed",
                f"LR trial {trial.index} at {trial.learning_rate:.3g} failed: {trial.message}",
            )
        elif job.complete:
            _record_trial(run, trial, job)
        elif job.suspended:
            trial.state, trial.message = "Pending", _say_queued(run, job, trial.message)
        else:
            # A Job without an active pod waits: for a node, or (locally) its turn.
            trial.state = "Running" if job.active else "Pending"
            before = None if trial.message == _queued_message(run, job) else trial.message
            trial.message = _trouble(run, before, job, f"LR trial {trial.index} Job {job.name}")
    if not trials.finished(status.trials):
        status.family = status.family or family
        status.phase = PHASE_OF_STAGE[TRIALS_STAGE]
        status.message = None
        record.state = "Running"
        record.start_time = record.start_time or iso_time(run.now)
        running = sum(t.state == "Running" for t in status.trials)
        detail = f"{running} of {len(status.trials)} LR trials running"
        troubled = [t for t in status.trials if t.state in ("Pending", "Running") and t.message]
        if troubled:
            detail += f"; LR trial {troubled[0].index}: {troubled[0].message}"
        waiting = [t for t in status.trials if t.state == "Pending"]
        if not running and waiting and all(_trial_queued(run, t) for t in waiting):
            # Nothing runs and every trial left waits for Kueue: the run is queued.
            status.phase = QUEUED
            record.state = "Pending"
            status.message = detail
        set_condition(status, "Ready", "False", status.phase, detail, run.now)
        run.outcome.requeue_after = REQUEUE_RUNNING
        return False
    record.completion_time = iso_time(run.now)
    chosen = trials.choose(status.trials)
    if chosen is None:
        status.phase = "Failed"
        status.message = trials.failure_message(status.trials)
        record.state = "Failed"
        record.message = status.message
        set_condition(status, "Ready", "False", "StageFailed", status.message, run.now)
        return False
    chosen.chosen = True
    record.state = "Succeeded"
    record.wer = chosen.best_wer
    record.message = trials.decision_message(status.trials, chosen)
    run.event("Normal", "TrialsDecided", record.message)
    return True


def _trial_queued(run: _Run, trial: TrialRecord) -> bool:
    """A trial whose Job is suspended (or was just created so, for Kueue)."""
    job = run.observed.trials.get(trial.index)
    return run.queue is not None if job is None else job.suspended  # None: created just now


def _record_trial(run: _Run, trial: TrialRecord, job: JobState) -> None:
    result = job.result
    if result is None or result.wer is None:
        trial.state = "Failed"
        trial.message = "finished without a WER in its result"
        run.event(
            "Warning",
            "TrialFailed",
            f"LR trial {trial.index} at {trial.learning_rate:.3g}: {trial.message}",
        )
        return
    trial.state = "Succeeded"
    trial.best_wer, trial.best_step = result.wer, result.best_step
    trial.curve = trials.curve(result)
    run.event(
        "Normal",
        "TrialSucceeded",
        f"LR trial {trial.index} at {trial.learning_rate:.3g}: best WER {result.wer:.2f}%",
    )


def _fail(run: _Run, spec: AsrAdaptationSpec, stage: str, job: JobState) -> None:
    status = run.status
    reason = _failure_reason(spec, stage, job, status.stages[stage].message)
    status.phase = "Failed"
    status.message = f"{stage} Job {job.name} failed: {reason}"
    status.stages[stage].state = "Failed"
    status.stages[stage].message = reason
    status.stages[stage].completion_time = iso_time(run.now)
    set_condition(status, "Ready", "False", "StageFailed", status.message, run.now)


def _complete_stage(run: _Run, spec: AsrAdaptationSpec, stage: str, job: JobState) -> None:
    status = run.status
    record = status.stages[stage]
    result = job.result
    record.state = "Succeeded"
    record.completion_time = iso_time(run.now)
    record.message = None  # what its pods went through while it ran is over
    if result is not None:
        record.wer = result.wer
        record.counts = dict(result.counts)
        record.message = result.message
    if stage == "baseline" and result is not None:
        status.baseline_wer = result.wer
        if result.model is not None:
            status.model = result.model
            status.memory = stage_estimate(spec, result.model, "train")
        if not _family(run, spec) and result.family:
            status.family = result.family
    if stage == "train" and result is not None:
        status.best_wer = result.wer if result.wer is not None else status.best_wer
        status.best_step = result.best_step if result.best_step is not None else status.best_step
        status.step = result.steps if result.steps is not None else status.step
    if stage == "evaluate" and result is not None:
        status.final_wer = result.wer
        status.baseline_test_wer = result.reference_wer
    wer = f", WER {result.wer:.2f}%" if result is not None and result.wer is not None else ""
    run.event("Normal", "StageSucceeded", f"{stage} finished{wer}")


def _current_directive(run: _Run) -> Directive:
    """The ConfigMap is the truth; the status's last cycle stands in until it is readable."""
    if run.observed.directive is not None:
        return run.observed.directive
    last = run.status.cycles[-1]
    return Directive(
        cycle=last.cycle,
        learning_rate=last.learning_rate,
        reason=last.reason,
        stop=run.status.stop is not None,
    )


def _record_directive(run: _Run) -> None:
    """The decision the directive in force says, in the status whatever the train Job's state.

    The operator writes the directive (its own ConfigMap) before the status, the commit
    point: a pass that died between the two, or whose status write was lost, leaves a
    decision in force that the status does not record, and the trainer may have applied
    it. While the Job runs, `_steer_training` finds it again (decide() is idempotent); but
    a Job that finished, failed or vanished meanwhile is never steered again, so the
    decision is recorded here from the directive alone: its cycle, LR and reason, or its
    stop. Its Events follow from the status (`_Run._decisions`), keyed, so said once. The
    WERs of the cycle it closed stay as far as a committed pass saw them: rank 0's history
    is readable only while the Job runs.
    """
    directive = run.observed.directive
    if directive is None:
        return
    status = run.status
    if all(record.cycle != directive.cycle for record in status.cycles):
        status.cycles = sorted(
            [
                *status.cycles,
                CycleRecord(
                    cycle=directive.cycle,
                    learning_rate=directive.learning_rate,
                    reason=directive.reason or "directive in force",
                ),
            ],
            key=lambda record: record.cycle,
        )
        if status.cycle is None or directive.cycle >= status.cycle:
            status.cycle, status.learning_rate = directive.cycle, directive.learning_rate
    if directive.stop and status.stop is None:
        status.stop = StopRecord(
            requested_at=run.now, reason=directive.reason or "stop", step=status.best_step
        )


def _sync_cycles(
    status: AsrAdaptationStatus,
    current: Directive,
    history: list[Evaluation],
    settings: ScheduleSettings,
) -> None:
    """Make the cycle records agree with the directive in force and the history.

    Derived, not accumulated: after a restart between writing the directive and
    the status, this repairs the status instead of deciding again.
    """
    records = {record.cycle: record for record in status.cycles}
    if current.cycle not in records:
        records[current.cycle] = CycleRecord(
            cycle=current.cycle,
            learning_rate=current.learning_rate,
            reason=current.reason or "directive in force",
        )
    for evaluation in sorted(history, key=lambda e: e.step):
        # A closed cycle no committed status recorded (its decision's status write lost,
        # and the next decision's directive out before another was): the trainer ran it at
        # its directive's LR, which every evaluation of it carries.
        closed = evaluation.cycle < current.cycle and evaluation.lr > 0
        if closed and evaluation.cycle not in records:
            records[evaluation.cycle] = CycleRecord(
                cycle=evaluation.cycle,
                learning_rate=evaluation.lr,
                reason="rebuilt from rank 0's history: the status of its decision was lost",
            )
    for cycle, record in records.items():
        if not history:
            continue  # rank 0 not reachable this time: keep what the status says
        wers = cycle_wers(history, cycle)
        if cycle < current.cycle and len(wers) < len(record.wers):
            # A replaced rank 0 resumed from a checkpoint older than this cycle's end: its
            # history lacks evaluations the status recorded when the cycle closed.
            continue
        record.wers = wers
        if cycle < current.cycle:
            window = window_evaluations(history, cycle, settings.evals_per_cycle)
            record.sigma_wer = cycle_sigma(window, settings.sigma_kind)
            record.sigma_kind = settings.sigma_kind
    status.cycles = [records[c] for c in sorted(records)]


def _steer_training(run: _Run, spec: AsrAdaptationSpec, job: JobState) -> None:
    status = run.status
    run.outcome.requeue_after = REQUEUE_RUNNING
    family = status.family or _family(run, spec) or DEFAULT_FAMILY
    current = _current_directive(run)
    history = list(run.observed.evaluations.evaluations) if run.observed.evaluations else []
    _observe_history(status, history)
    # A stop decided by a pass whose status was not written is recorded by now
    # (_record_directive), and said with this status.
    if status.stop is not None:
        run.outcome.directive = current
        if _stop_overdue(run, spec):
            _enforce_stop(run, spec, job)
        return
    settings = ScheduleSettings.from_spec(spec.training, family)
    decision = decide(settings, current, history)
    directive = decision.directive
    run.outcome.directive = directive
    _sync_cycles(status, directive, history, settings)
    status.cycle, status.learning_rate = directive.cycle, directive.learning_rate
    if decision.sigma_wer is not None:
        status.sigma_wer = decision.sigma_wer
    # The Events of a decision come from the status it leaves (_Run._decisions).
    if decision.changed and directive.stop:
        status.stop = StopRecord(
            requested_at=run.now, reason=directive.reason or "stop", step=status.best_step
        )


def _observe_history(status: AsrAdaptationStatus, history: list[Evaluation]) -> None:
    if not history:
        return
    last = max(history, key=lambda e: e.step)
    status.step, status.wer = last.step, last.wer
    best = best_evaluation(history)
    if best is not None:
        status.best_wer, status.best_step = best.wer, best.step


def _stop_overdue(run: _Run, spec: AsrAdaptationSpec) -> bool:
    """A stop is in force and the trainer had its grace period to honour it."""
    stop = run.status.stop
    grace = spec.training.stop_grace_period_seconds
    return stop is not None and run.now - stop.requested_at > grace


def _enforce_stop(run: _Run, spec: AsrAdaptationSpec, job: JobState | None) -> None:
    """The trainer did not honour the stop in time: its Job is deleted, never suspended (a
    suspended Job is Kueue's to resume, and Kueue would), and the stage counts as done.

    The best checkpoint is on the output volume whatever the trainer was doing: the evaluate
    stage exports it when the trainer did not (plan.py: --export-checkpoint) and measures
    it, and the run ends Succeeded like a stop the trainer honoured. `job` None: its Job is
    gone already (deleted by a pass whose status was lost).
    """
    status = run.status
    grace = spec.training.stop_grace_period_seconds
    name = job_name(run.name, "train")
    if job is not None:
        # Foreground: the Job stays until its pods are gone, and evaluate waits for it
        # (_stopped_train_going), so no trainer still writes the checkpoint it reads.
        run.outcome.delete.append(Child("Job", name, foreground=True, uid=job.uid))
    # Said with the status that records it, keyed: a pass that failed after the delete
    # leaves the next one, which finds the Job going or gone, to say it again, once.
    run.event(
        "Warning",
        "StopNotHonoured",
        f"trainer ignored the stop for {grace:g}s; deleting Job {name}",
        key="stop-enforced",
    )
    record = status.stages["train"]
    best = ""
    if status.best_wer is not None:
        best = f"; best WER {status.best_wer:.2f}% at step {status.best_step}"
    then = " goes to evaluate" if spec.evaluation.enabled else " stays in train/checkpoints/best"
    record.state = "Succeeded"
    record.completion_time = iso_time(run.now)
    record.wer = status.best_wer
    why = (
        f"the trainer did not stop within {grace:g}s, Job {name} deleted"
        if job is not None
        else f"Job {name} was gone before the trainer stopped"
    )
    record.message = f"stop enforced: {why}{best}; the best checkpoint{then}"
    status.message = record.message
    set_condition(status, "Ready", "False", STOP_ENFORCED, record.message, run.now)
    run.outcome.requeue_after = REQUEUE_DELETING


def _stopped_train_going(run: _Run) -> bool:
    """True, saying so, while the train Job of an enforced stop is still being deleted (its
    pods terminating): the next stage reads its checkpoint only once no trainer runs."""
    record = run.status.stages.get("train")
    job = run.observed.jobs.get("train")
    if record is None or record.state != "Succeeded" or job is None or job.complete:
        return False
    run.outcome.delete.append(Child("Job", job.name, foreground=True, uid=job.uid))  # idempotent
    message = f"waiting for the stopped train Job {job.name} and its pods to be deleted"
    run.status.message = message
    set_condition(run.status, "Ready", "False", STOP_ENFORCED, message, run.now)
    run.outcome.requeue_after = REQUEUE_DELETING
    return True


def _summary(status: AsrAdaptationStatus) -> str:
    parts = []
    if status.baseline_test_wer is not None:
        parts.append(f"baseline WER {status.baseline_test_wer:.2f}% (test)")
    elif status.baseline_wer is not None:
        parts.append(f"baseline WER {status.baseline_wer:.2f}% (validation)")
    if status.final_wer is not None:
        parts.append(f"final WER {status.final_wer:.2f}% (test)")
    return ", ".join(parts) or "all stages succeeded"
