"""Formats shared by the operator and the trainer (one pydantic model each).

Everything here crosses a process boundary: the data manifests, the directive
the operator writes, the evaluation history rank 0 serves, and the compact
stage result a finished container leaves in its termination message. Pure
pydantic, no torch.

WER and CER are in percent throughout, as in the paper (σ_ref = 0.5 means half
a WER point).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from marco_contract.memory import ModelDims
from marco_contract.scoring import EditCounts
from marco_contract.status import Family

#: Kubernetes caps a termination message at 4096 bytes; stage results stay below.
TERMINATION_MESSAGE_LIMIT = 4096


class Utterance(BaseModel):
    """One line of a JSONL data manifest. Paths are relative to the manifest."""

    model_config = ConfigDict(extra="allow")

    # No NUL: no file system takes one in a name, and Python refuses to stat it (a
    # ValueError that would end a stage over one line instead of skipping the line).
    audio_filepath: str = Field(min_length=1, pattern=r"^[^\x00]*$")
    text: str | None = Field(default=None, description="Transcript; absent for unlabeled audio.")
    duration: float | None = Field(default=None, ge=0, description="Seconds.")
    language: str | None = None


class Directive(BaseModel):
    """What the operator tells rank 0 (the `directive.json` control file)."""

    cycle: int = Field(ge=0, description="Training cycle this learning rate belongs to.")
    learning_rate: float = Field(gt=0)
    stop: bool = Field(default=False, description="Save/export the best checkpoint and exit 0.")
    reason: str | None = Field(default=None, description="Why the decision was taken.")


class Evaluation(BaseModel):
    """One periodic validation measurement taken by the trainer."""

    step: int = Field(ge=0, description="Optimizer step at which it was measured.")
    cycle: int = Field(ge=0)
    lr: float = Field(ge=0, description="Learning rate in force at that step.")
    wer: float = Field(ge=0, description="Word error rate in percent.")
    wer_se: float | None = Field(
        default=None,
        ge=0,
        description="Standard error of the WER over the validation utterances, in percent "
        "points (marco_contract.scoring.wer_standard_error).",
    )
    wer_change_se: float | None = Field(
        default=None,
        ge=0,
        description="Standard error of the WER's change since the previous evaluation of "
        "this run, on the same validation utterances, in percent points "
        "(marco_contract.scoring.wer_change_standard_error); None for the first one.",
    )
    cer: float | None = Field(default=None, ge=0, description="Character error rate in percent.")
    loss: float | None = Field(default=None, description="Mean training loss since the last eval.")
    time: float = Field(description="Unix time of the measurement.")
    skipped_steps: int = Field(
        default=0,
        ge=0,
        description="Optimizer steps skipped for a non-finite loss since the previous evaluation.",
    )


class EvaluationHistory(BaseModel):
    """Rank 0's `GET /v1/evaluations` body."""

    adaptation: str | None = None
    evaluations: list[Evaluation] = Field(default_factory=list)
    directive: Directive | None = Field(
        default=None, description="The directive the trainer is currently applying."
    )
    finished: bool = Field(default=False, description="Training is over (stopped or max steps).")


class StageResult(BaseModel):
    """Compact result of a finished stage: the termination message in a cluster,
    `result.json` in the stage's output directory locally."""

    stage: str
    ok: bool = True
    wer: float | None = Field(default=None, ge=0)
    cer: float | None = Field(default=None, ge=0)
    best_step: int | None = None
    reference_wer: float | None = Field(
        default=None, ge=0, description="WER of the reference (pre-trained) model, same set."
    )
    family: Family | None = Field(
        default=None, description="Model family the stage detected: encoder-decoder or llm."
    )
    steps: int | None = None
    counts: dict[str, int] = Field(
        default_factory=dict, description="processed / skipped / kept counters."
    )
    message: str | None = None
    curve: list[tuple[int, float]] = Field(
        default_factory=list,
        description="(step, WER) of every evaluation of a training run: an LR trial's curve.",
    )
    # A sharded stage's pods each leave their own result; these say which one it is.
    shard_index: int | None = Field(default=None, ge=0, description="This shard (its index).")
    num_shards: int | None = Field(default=None, ge=1, description="Shards of the stage.")
    # What wer, cer and reference_wer are computed from (baseline and evaluate): counts
    # add up over shards, rates do not (marco_contract.evaluation.merge_evaluation_results).
    word_counts: EditCounts | None = Field(default=None, description="Edit counts behind wer.")
    char_counts: EditCounts | None = Field(default=None, description="Edit counts behind cer.")
    reference_word_counts: EditCounts | None = Field(
        default=None, description="Edit counts behind reference_wer."
    )
    model: ModelDims | None = Field(
        default=None,
        description="The model's dimensions (its config.json), reported by the stage that "
        "loads it first (baseline): the operator estimates training's memory from them.",
    )

    def to_termination_message(self) -> str:
        text = self.model_dump_json(exclude_none=True)
        if len(text.encode()) > TERMINATION_MESSAGE_LIMIT:
            # Counts are the only unbounded part; a message that says so beats a truncated JSON.
            text = self.model_copy(
                update={"counts": {}, "message": "counts dropped: termination message too long"}
            ).model_dump_json(exclude_none=True)
        if len(text.encode()) > TERMINATION_MESSAGE_LIMIT:
            # A long curve next (hundreds of evaluations); the best WER and step remain.
            text = self.model_copy(
                update={
                    "counts": {},
                    "curve": [],
                    "message": "counts and curve dropped: termination message too long",
                }
            ).model_dump_json(exclude_none=True)
        return text
