"""Training options: the ``train`` CLI's flags as one typed object. No torch here.

The knobs the spec sets (budget, batch, precision, seed, language, LoRA, decoding) and their
defaults come from the shared models of `marco_contract.options`; this model
adds the paths and the trainer-only knobs. The ``train`` parser is built from
it (`marco_contract.argv`), so a flag, its default and its check exist once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, model_validator

from marco_contract.argv import Flag
from marco_contract.options import (
    DecodingOptions,
    LanguageOptions,
    LoraOptions,
    RetentionOptions,
    TrainerFamily,
    TrainingOptions,
    VolumeOptions,
)


class TrainOptions(
    TrainingOptions, RetentionOptions, LanguageOptions, DecodingOptions, VolumeOptions
):
    model: str = Field(description="model directory or Hub id (cached)")
    train_manifests: Annotated[list[str], Flag("train-manifest", repeat=True)] = Field(
        min_length=1, description="training manifest (.jsonl or a folder of them); repeatable"
    )
    clean_manifests: Annotated[list[str], Flag("clean-manifest", repeat=True)] = Field(
        default_factory=list,
        description="clean source manifest drawn at --clean-source-share of each batch "
        "(the --train-manifest ones then hold the augmented copies); repeatable",
    )
    validation_manifest: str = Field(description="validation manifest for the periodic WER")
    output_dir: Path = Field(description="checkpoints, evaluations and the export")
    control_file: str | None = Field(
        default=None, description="directive JSON written by the operator"
    )
    learning_rate: float = Field(default=1e-5, gt=0, description="LR until a directive")
    eval_batch_size: int = Field(default=8, ge=1, description="utterances per validation batch")
    family: TrainerFamily = Field(default="auto", description="model family; auto: detected")
    lora: LoraOptions = Field(default_factory=LoraOptions)
    full_finetune: bool = Field(default=False, description="LLM family: no LoRA")
    metrics_port: int = Field(default=9400, ge=0, lt=65536, description="0 = no endpoint")
    metrics_host: str = Field(
        default="127.0.0.1",
        description="address the endpoint binds (loopback; the operator passes 0.0.0.0 in a pod)",
    )
    api_port: int | None = Field(
        default=None,
        ge=0,
        lt=65536,
        description="port of /v1/evaluations when not --metrics-port's (0 = not served)",
    )
    api_token_file: str | None = Field(
        default=None,
        description="file holding the bearer token /v1/evaluations asks for (none: no token)",
    )
    adaptation: str | None = Field(default=None, description="name used as the metrics label")
    weight_decay: float = Field(default=0.0, ge=0, description="AdamW weight decay")
    max_grad_norm: float = Field(default=1.0, gt=0, description="gradient clipping norm")
    max_consecutive_nonfinite: int = Field(
        default=3,
        ge=1,
        description="non-finite steps in a row before rolling back to the best checkpoint",
    )
    baseline_wer: float | None = Field(default=None, description="WER0 for the model card")
    export: bool = Field(
        default=True,
        description="export the best checkpoint at the end (off for an LR trial: only its "
        "WER curve is wanted)",
    )
    prefetch: bool | None = Field(
        default=None,
        description="load the next step's audio in a background thread "
        "(default: on with a GPU, off on CPU, where the step already uses every core)",
    )
    feature_cache_mb: int | None = Field(
        default=None,
        ge=0,
        description="memory per rank for training utterances' features reused in later epochs "
        "(Whisper-style fixed windows; 0 = off; default: an eighth of the container's memory "
        "over the node's ranks, at most 2048)",
    )

    @model_validator(mode="after")
    def _clean_share_has_its_source(self) -> TrainOptions:
        # Either alone is a half-given instruction: refuse it rather than guess.
        if (self.clean_source_share is None) != (not self.clean_manifests):
            raise ValueError(
                "--clean-source-share and --clean-manifest go together (one is missing)"
            )
        return self
