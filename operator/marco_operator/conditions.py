"""The status's standard conditions, derived from the rest of the status after every pass.

One function (`derive_conditions`) says what Ready, Running, Succeeded, Failed and
Queued are for a status, so the kopf driver's `.status` and the local driver's
`status.json` carry the same set, and `kubectl wait --for=condition=Succeeded` (or
`=Failed`) ends a wait in a cluster. The pass itself sets Ready (and Reconciled), since
only it knows the detail (which stage, what its pods say); the others follow from the
phase, so a phase added later is read generically: any phase that is neither Pending,
Queued nor a finished one means the pipeline is in progress (Running). No I/O.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from marco_contract.status import (
    MAX_CONDITION_MESSAGE,
    TERMINAL_PHASES,
    AsrAdaptationStatus,
    Condition,
    ConditionStatus,
)

READY = "Ready"
RUNNING = "Running"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
#: Also the phase, the Ready reason and the Event reason of a stage whose Job is suspended,
#: not by the operator (which never suspends one): Kueue holds it until it admits it.
QUEUED: Final = "Queued"
#: The conditions derived here, in the order they are listed (others, e.g. Reconciled, follow).
DERIVED = (READY, RUNNING, SUCCEEDED, FAILED, QUEUED)
#: Phases in which nothing runs yet: before the first Job (or waiting for a predecessor's
#: objects to go, or for a retry's failed Jobs), and while Kueue holds the Jobs.
WAITING_PHASES = frozenset({"Pending", QUEUED})
#: Phases that end a run badly: a stage failed, or the spec can never run as it is (a new
#: generation of it starts over). EarlyStopped is judged by its stages (`outcome`).
FAILED_PHASES = frozenset({"Failed", "Invalid"})


def iso_time(now: float) -> str:
    """`now` as metav1.Time writes it: RFC 3339, UTC, whole seconds."""
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def clip(message: str, limit: int = MAX_CONDITION_MESSAGE) -> str:
    return message if len(message) <= limit else message[: limit - 1] + "…"


def set_condition(
    status: AsrAdaptationStatus,
    type_: str,
    value: ConditionStatus,
    reason: str,
    message: str,
    now: float,
    generation: int | None = None,
) -> None:
    """Upsert a condition, as apimachinery's meta.SetStatusCondition does: lastTransitionTime
    moves only when the status value flips; reason, message and generation always follow.
    `generation` defaults to the generation the status was observed at."""
    generation = status.observed_generation if generation is None else generation
    at = next((i for i, c in enumerate(status.conditions) if c.type == type_), None)
    before = None if at is None else status.conditions[at]
    condition = Condition(
        type=type_,
        status=value,
        reason=reason,
        message=clip(message),
        last_transition_time=(
            before.last_transition_time
            if before is not None and before.status == value
            else iso_time(now)
        ),
        observed_generation=generation,
    )
    if at is None:
        status.conditions.append(condition)
    else:
        status.conditions[at] = condition


def outcome(status: AsrAdaptationStatus) -> str:
    """How far the run is: "succeeded", "failed", "queued", "waiting" or "running".

    A finished phase other than Failed (EarlyStopped) is a success unless one of its stages
    failed: a stop the trainer honoured, or one enforced that still exported the best
    checkpoint, delivered a model; one that left its train stage Failed did not.
    """
    phase = status.phase
    if phase in FAILED_PHASES:
        return "failed"
    if phase in TERMINAL_PHASES:
        if phase == SUCCEEDED:
            return "succeeded"
        broken = any(stage.state == "Failed" for stage in status.stages.values())
        return "failed" if broken else "succeeded"
    if phase == QUEUED:
        return "queued"
    if phase in WAITING_PHASES:
        return "waiting"
    return "running"


def derive_conditions(status: AsrAdaptationStatus, now: float) -> list[Condition]:
    """The status's conditions after a pass: Ready as the pass set it (derived when it did
    not), then Running, Succeeded, Failed and Queued from the phase, then any other kind
    (Reconciled) as it was. Each condition's observedGeneration is the generation the pass
    acted on (status.observedGeneration); its lastTransitionTime moves only when its status
    flips. `status` is not changed."""
    # set_condition replaces a condition (never changes one) in the list: a new list on a
    # shallow copy leaves `status` as it was, without copying its evaluation history.
    work = status.model_copy(update={"conditions": list(status.conditions)})
    state = outcome(work)
    ready = next((c for c in work.conditions if c.type == READY), None)
    phase = work.phase
    message = work.message or ""
    if ready is None:
        # Every pass sets Ready; a status no pass went through yet (one whose first pass
        # failed) still gets a consistent set.
        value: ConditionStatus = "True" if state == "succeeded" else "False"
        set_condition(work, READY, value, phase, message, now)
    else:  # as the pass left it, for the generation it acted on
        set_condition(work, READY, ready.status, ready.reason, ready.message, now)
    ready = next(c for c in work.conditions if c.type == READY)
    # The pass's own words: while running, what runs and what its pods say; once failed, why.
    detail = ready.message or message
    why = ready.reason
    running = state == "running"
    # Not yet running: the pass's reason says what it waits for (Kueue, a retry...).
    waiting = state in ("waiting", "queued")
    set_condition(
        work,
        RUNNING,
        "True" if running else "False",
        why if waiting else phase,
        detail if running or waiting else f"the run is {phase}",
        now,
    )
    if state == "succeeded":
        set_condition(work, SUCCEEDED, "True", phase, message or detail, now)
    elif state == "failed":
        set_condition(work, SUCCEEDED, "False", why, message or detail, now)
    else:
        set_condition(work, SUCCEEDED, "False", phase, f"the run is {phase}", now)
    if state == "failed":
        set_condition(work, FAILED, "True", why, message or detail, now)
    else:
        set_condition(work, FAILED, "False", phase, f"the run is {phase}", now)
    queued = state == "queued"
    set_condition(
        work,
        QUEUED,
        "True" if queued else "False",
        why if queued else phase,
        detail if queued else f"the run is {phase}",
        now,
    )
    order = {type_: i for i, type_ in enumerate(DERIVED)}
    return sorted(work.conditions, key=lambda c: order.get(c.type, len(DERIVED)))
