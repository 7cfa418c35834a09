"""The stage options the spec sets and the trainer takes: one source for each default.

Each model here is a section (or part of one) of the AsrAdaptation spec and the
flags of a trainer subcommand at once: the API's spec classes extend them with
what only the operator reads (`enabled`, shards, the LR bounds...), the plan
writes them as flags with `marco_contract.argv.to_argv`, and the trainer's CLIs
build their parsers from them (extended with trainer-only knobs). A default,
bound or description therefore exists once, here, and reaches the CRD, the
command line and ``--help`` alike.

Changing a default here changes the API: the CRD is generated from these
models (`marco crd`), and the defaults are the API's documented ones.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from marco_contract.status import ApiModel

#: The trainer's --family: a spec family, or "auto" (detected from the model's config).
TrainerFamily = Literal["auto", "encoder-decoder", "llm"]


class StageOptions(ApiModel):
    """camelCase in the spec, snake_case in Python, --kebab-case on the command line."""


class LanguageOptions(StageOptions):
    """How the model decodes: `model` in the spec; --task/--language of train and evaluate."""

    task: Literal["transcribe", "translate"] = Field(
        default="transcribe", description="Decoder task."
    )
    language: str | None = Field(default="en", description="Language code of the target audio.")


class LoraOptions(StageOptions):
    """LoRA adapters (llm family): `model.lora`; --lora-* of train."""

    r: int = Field(default=16, ge=1, le=1024, description="Adapter rank.")
    alpha: int = Field(default=32, ge=1, description="Adapter scaling numerator.")
    dropout: float = Field(default=0.05, ge=0, lt=1, description="Dropout on the adapter input.")
    # All four attention projections: the API's documented default since v1alpha1 (the
    # trainer's own q,v-only default had drifted from it and is gone).
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        min_length=1,
        description="Module names that get adapters.",
    )


class FilterOptions(StageOptions):
    """Data filter bounds: `filter` in the spec; flags of the filter subcommand."""

    min_duration: float = Field(default=0.3, ge=0, description="Seconds.")
    max_duration: float = Field(default=30.0, gt=0, description="Seconds (Whisper's window).")
    # 30, the API's documented default (the trainer had drifted to 35 when run by hand).
    # Alphanumeric characters per second: fast read speech stays under ~20.
    max_chars_per_second: float = Field(
        default=30.0,
        gt=0,
        description="Transcript characters (letters and digits) per second of audio above "
        "which a line is rejected as misaligned.",
    )


class AugmentOptions(StageOptions):
    """Augmentation draws: part of `augmentation` in the spec; flags of augment."""

    copies: int = Field(default=1, ge=1, le=100, description="Augmented copies per utterance.")
    seed: int = Field(default=0, ge=0, description="Seed of every per-utterance draw.")


class EvaluateOptions(StageOptions):
    """How much of a manifest is scored: `evaluation` in the spec (`baseline.samples`
    for the baseline run); --max-samples of evaluate."""

    max_samples: int | None = Field(
        default=None, ge=1, description="Test utterances; all when unset."
    )


class TrainingOptions(StageOptions):
    """The loop's budget and batch: part of `training` in the spec; flags of train."""

    # 5000, the API's documented default (the trainer CLI's 1000 had drifted from it).
    max_steps: int = Field(default=5000, ge=1, description="Optimizer steps at most.")
    eval_every: int = Field(default=50, ge=1, description="Steps between validation WERs.")
    eval_samples: int = Field(default=200, ge=1, description="Validation utterances per eval.")
    per_device_batch_size: int = Field(default=4, ge=1, description="Utterances per device.")
    gradient_accumulation: int = Field(
        default=8, ge=1, description="Micro-batches per optimizer step."
    )
    precision: Literal["auto", "bf16", "fp32"] = Field(
        default="auto", description="auto: bf16 where the GPU supports it, else fp32."
    )
    gradient_checkpointing: bool = Field(
        default=False, description="Recompute activations in the backward pass (less memory)."
    )
    seed: int = Field(
        default=0, ge=0, description="Seed of the data order and the initialisation of new weights."
    )
