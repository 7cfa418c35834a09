"""The status an adaptation reports: the CR's `.status`, and `status.json` of a
local run, which the trainer's report reads. The spec models build on the same
`ApiModel` base (`marco_operator.api`)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, Field

# ApiModel and Family are defined there and re-exported here, where callers import them.
from marco_contract.api_model import ApiModel, Family
from marco_contract.memory import MemoryEstimate, ModelDims

#: How σ_WER of Eq. 1 is taken over a cycle (`spec.training.sigma`, docs/method.md).
SigmaKind = Literal["population", "trend-residual", "noise-excess", "descent-excess"]
#: A condition's status, as Kubernetes spells it.
ConditionStatus = Literal["True", "False", "Unknown"]
Phase = Literal[
    "Pending",
    "Queued",
    "Fetching",
    "Filtering",
    "Profiling",
    "Augmenting",
    "Baseline",
    "Trials",
    "Training",
    "Evaluating",
    "Pushing",
    "Succeeded",
    "EarlyStopped",
    "Failed",
    "Invalid",
]
TERMINAL_PHASES: frozenset[str] = frozenset({"Succeeded", "EarlyStopped", "Failed"})


#: metav1.Condition's rules (k8s.io/apimachinery/pkg/apis/meta/v1/types.go), so that the CRD
#: refuses what the API server refuses for a built-in kind's conditions.
CONDITION_TYPE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
CONDITION_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
MAX_CONDITION_TYPE = 316
MAX_CONDITION_REASON = 1024
MAX_CONDITION_MESSAGE = 32768


#: RFC 3339's date-time (section 5.6): a full date, T, a time, an offset (Z or ±hh:mm).
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def _rfc3339(value: str) -> str:
    """An RFC 3339 time with its offset (metav1.Time writes `2006-01-02T15:04:05Z`)."""
    try:
        # The pattern says the shape; parsing refuses a 13th month or a 25th hour.
        valid = bool(_RFC3339.fullmatch(value)) and bool(datetime.fromisoformat(value.upper()))
    except ValueError:
        valid = False
    if not valid:
        raise ValueError(f"not an RFC 3339 time, e.g. 2026-01-02T15:04:05Z: {value!r}")
    return value


Rfc3339 = Annotated[str, AfterValidator(_rfc3339), Field(json_schema_extra={"format": "date-time"})]


class Condition(ApiModel):
    """One condition, in metav1.Condition's shape, so `kubectl wait --for=condition=...`
    and every tool that reads standard conditions read it."""

    type: str = Field(
        min_length=1,
        max_length=MAX_CONDITION_TYPE,
        pattern=CONDITION_TYPE_PATTERN,
        description="Ready, Running, Succeeded, Failed, Queued or Reconciled.",
    )
    status: ConditionStatus
    reason: str = Field(
        min_length=1,
        max_length=MAX_CONDITION_REASON,
        pattern=CONDITION_REASON_PATTERN,
        description="Why, in one CamelCase word.",
    )
    message: str = Field(default="", max_length=MAX_CONDITION_MESSAGE)
    last_transition_time: Rfc3339 = Field(
        description="When the status last changed from one value to another."
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation the condition was set for."
    )


class StageStatus(ApiModel):
    job_name: str | None = None
    state: Literal["Pending", "Running", "Succeeded", "Failed", "Skipped"] = "Pending"
    start_time: str | None = Field(default=None, description="When the stage's Job was created.")
    completion_time: str | None = Field(default=None, description="When it was seen finished.")
    wer: float | None = None
    counts: dict[str, int] = Field(default_factory=dict)
    message: str | None = Field(
        default=None,
        description="While its Job runs, what is wrong with its pods (Unschedulable, "
        "ImagePullBackOff, OOMKilled...); once it failed, why; once it succeeded, its result.",
    )


class CycleRecord(ApiModel):
    """One LR cycle: the LR it ran at and what was measured in it."""

    cycle: int = Field(ge=0)
    learning_rate: float = Field(gt=0)
    reason: str = Field(description="Why this LR (Eq. 1 σ, Eq. 2 WER, initial choice).")
    wers: list[float] = Field(default_factory=list, description="WERs measured in the cycle.")
    sigma_wer: float | None = None
    sigma_kind: SigmaKind | None = Field(
        default=None,
        description="Which σ_WER this is: population (the paper's), trend-residual, "
        "noise-excess or descent-excess.",
    )


class WerPoint(ApiModel):
    step: int = Field(ge=0)
    wer: float = Field(ge=0, description="Validation WER in percent.")


class TrialRecord(ApiModel):
    """One pre-finetuning LR trial: a short run from the initial weights at a fixed LR."""

    index: int = Field(ge=0)
    learning_rate: float = Field(gt=0)
    job_name: str | None = None
    state: Literal["Pending", "Running", "Succeeded", "Failed"] = "Pending"
    best_wer: float | None = Field(default=None, description="Lowest validation WER it reached.")
    best_step: int | None = None
    curve: list[WerPoint] = Field(
        default_factory=list, description="Its validation WER at each evaluation."
    )
    chosen: bool = Field(default=False, description="Cycle 0 trains at this trial's LR.")
    message: str | None = Field(
        default=None, description="Why it failed; while it runs, what is wrong with its pods."
    )


class StopRecord(ApiModel):
    requested_at: float = Field(description="Unix time the stop directive was written.")
    reason: str
    step: int | None = None


class AsrAdaptationStatus(ApiModel):
    model_config = ConfigDict(extra="ignore")  # kopf keeps its own bookkeeping in status

    phase: Phase = "Pending"
    observed_generation: int | None = Field(
        default=None,
        description="The metadata.generation of the spec this status reflects: the last pass "
        "that went through acted on it.",
    )
    started_generation: int | None = Field(
        default=None,
        description="The metadata.generation whose spec the run started with (its first Job "
        "created). From then on only the spec fields that are safe to change may be edited.",
    )
    retry_token: str | None = Field(
        default=None,
        description="The last value of the asr.marco.dev/retry annotation acted on; a new "
        "value retries a Failed run once.",
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Standard conditions, one of each type: Ready, Running, Succeeded, Failed, "
        "Queued, and Reconciled once a pass failed.",
        json_schema_extra={
            # As metav1.Condition lists are declared: a merge by type, one entry per type.
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )
    message: str | None = None
    family: Family | None = None
    stages: dict[str, StageStatus] = Field(default_factory=dict)
    baseline_wer: float | None = Field(
        default=None, description="WER0 of the pre-trained model on the validation subset."
    )
    baseline_test_wer: float | None = Field(
        default=None, description="The pre-trained model's WER on the test set."
    )
    final_wer: float | None = Field(default=None, description="The best checkpoint's test WER.")
    step: int | None = None
    cycle: int | None = None
    learning_rate: float | None = None
    sigma_wer: float | None = None
    wer: float | None = None
    best_wer: float | None = None
    best_step: int | None = None
    cycles: list[CycleRecord] = Field(default_factory=list)
    trials: list[TrialRecord] = Field(
        default_factory=list, description="The LR trials (spec.trials), in candidate order."
    )
    stop: StopRecord | None = None
    model: ModelDims | None = Field(
        default=None,
        description="The model's dimensions, from its config.json, as the baseline stage "
        "read them; the memory estimate is computed from them.",
    )
    memory: MemoryEstimate | None = Field(
        default=None,
        description="Estimated memory of a train rank (device) and pod (host), in bytes per "
        "component; written once the baseline reported the model, before the train Job.",
    )
