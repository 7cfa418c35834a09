"""The status an adaptation reports: the CR's `.status`, and `status.json` of a
local run, which the trainer's report reads. The spec models build on the same
`ApiModel` base (`marco_operator.api`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

Family = Literal["encoder-decoder", "llm"]
#: How σ_WER of Eq. 1 is taken over a cycle (`spec.training.sigma`, docs/method.md).
SigmaKind = Literal["population", "trend-residual"]
#: A condition's status, as Kubernetes spells it.
ConditionStatus = Literal["True", "False", "Unknown"]
Phase = Literal[
    "Pending",
    "Queued",
    "Filtering",
    "Profiling",
    "Augmenting",
    "Baseline",
    "Trials",
    "Training",
    "Evaluating",
    "Succeeded",
    "EarlyStopped",
    "Failed",
    "Invalid",
]
TERMINAL_PHASES: frozenset[str] = frozenset({"Succeeded", "EarlyStopped", "Failed"})


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are refused."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", validate_assignment=True
    )


class Condition(ApiModel):
    type: str
    status: ConditionStatus
    reason: str
    message: str = ""
    last_transition_time: str | None = None


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
        default=None, description="Which σ_WER this is: population (the paper's) or trend-residual."
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
    conditions: list[Condition] = Field(default_factory=list)
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
