"""The stage graph and each stage's trainer command line.

Stages run in order: filter → profile → augment → baseline → train → evaluate;
the spec turns stages off. Both drivers use this module: the kopf driver wraps
the commands into Jobs (resources.py), the local driver runs them as
subprocesses. Paths go through a `Layout`, which maps the spec's volume paths
onto the pod's mounts or onto local directories.

The spec's stage options reach the command line through `to_argv`, one flag
per field of the shared options model (`marco_contract.options`), and every
value is passed explicitly, defaults included: what a stage does never depends
on the trainer's defaults. Only paths (mapped by the layout) and the values the
operator computes (family, learning rate) are written here by hand.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from marco_contract.argv import to_argv
from marco_contract.layout import STAGES, Layout
from marco_contract.options import (
    AugmentOptions,
    DecodingOptions,
    EvaluateOptions,
    FilterOptions,
    LanguageOptions,
    LoraOptions,
    TrainingOptions,
)
from marco_contract.status import Phase
from marco_operator.api import AsrAdaptationSpec

PHASE_OF_STAGE: dict[str, Phase] = {
    "filter": "Filtering",
    "profile": "Profiling",
    "augment": "Augmenting",
    "baseline": "Baseline",
    "train": "Training",
    "evaluate": "Evaluating",
}

#: Stages that load the model and want GPUs.
GPU_STAGES = frozenset({"baseline", "train", "evaluate"})


def enabled_stages(spec: AsrAdaptationSpec) -> list[str]:
    switches = {
        "filter": spec.filter.enabled,
        "profile": spec.profile.enabled,
        "augment": spec.augmentation.enabled,
        "baseline": spec.baseline.enabled,
        "train": True,
        "evaluate": spec.evaluation.enabled,
    }
    return [stage for stage in STAGES if switches[stage]]


def source_manifests(spec: AsrAdaptationSpec, layout: Layout) -> list[str]:
    """The clean training data: the filter's kept lines, or the spec's manifests as given."""
    if spec.filter.enabled:
        return [layout.run.kept_manifest]
    return [layout.data(path) for path in spec.data.train]


def train_manifests(spec: AsrAdaptationSpec, layout: Layout) -> list[str]:
    sources = source_manifests(spec, layout)
    if not spec.augmentation.enabled:
        return sources
    augmented = [layout.stage_dir("augment")]
    return sources + augmented if spec.augmentation.keep_original else augmented


@dataclass(frozen=True)
class StageCommand:
    stage: str
    args: list[str]  # marco-trainer arguments, subcommand first
    shards: int = 1
    distributed: bool = False  # run under torchrun


def _language_args(spec: AsrAdaptationSpec) -> list[str]:
    return to_argv(spec.model, LanguageOptions)


def _decoding_args(spec: AsrAdaptationSpec) -> list[str]:
    """The same decoding flags for every stage that decodes (baseline, train, evaluate)."""
    return to_argv(spec.decoding, DecodingOptions)


def stage_command(
    spec: AsrAdaptationSpec,
    stage: str,
    layout: Layout,
    *,
    name: str,
    family: str,
    learning_rate: float | None = None,
) -> StageCommand:
    """The `marco-trainer` command of one stage (contract: docs/architecture.md)."""
    out = layout.stage_dir(stage)
    if stage == "filter":
        args = ["filter", "--output-dir", out]
        for manifest in spec.data.train:
            args += ["--manifest", layout.data(manifest)]
        args += to_argv(spec.filter, FilterOptions)
        return StageCommand(stage, args)
    if stage == "profile":
        assert spec.data.target_audio is not None  # the spec validator guarantees it
        args = ["profile", "--input", layout.data(spec.data.target_audio), "--output-dir", out]
        return StageCommand(stage, args, shards=spec.profile.shards)
    if stage == "augment":
        aug = spec.augmentation
        args = ["augment", "--output-dir", out, *to_argv(aug, AugmentOptions)]
        for manifest in source_manifests(spec, layout):
            args += ["--manifest", manifest]
        if aug.preset == "telephony":
            args += ["--preset", "telephony"]
        else:
            args += ["--profile", layout.stage_dir("profile")]
        if aug.rir_path:
            args += ["--rir-dir", layout.data(aug.rir_path)]
        if aug.noise_path:
            args += ["--noise-dir", layout.data(aug.noise_path)]
        return StageCommand(stage, args, shards=aug.shards)
    if stage == "baseline":
        args = [
            "evaluate",
            "--model", layout.model(spec.model.source),
            "--manifest", layout.data(spec.data.validation),
            "--output-dir", out,
            *to_argv(EvaluateOptions(max_samples=spec.baseline.samples)),
            "--family", family,
            *_language_args(spec),
            *_decoding_args(spec),
        ]  # fmt: skip
        return StageCommand(stage, args)
    if stage == "train":
        if learning_rate is None:
            raise ValueError("the train stage needs its initial learning rate")
        training = spec.training
        args = [
            "train",
            "--model", layout.model(spec.model.source),
            "--validation-manifest", layout.data(spec.data.validation),
            "--output-dir", out,
            "--control-file", layout.control_file,
            "--learning-rate", repr(learning_rate),
            *to_argv(training, TrainingOptions),
            "--family", family,
            "--adaptation", name,
            "--metrics-port", str(layout.metrics_port),
            *_language_args(spec),
            *_decoding_args(spec),
        ]  # fmt: skip
        for manifest in train_manifests(spec, layout):
            args += ["--train-manifest", manifest]
        if family == "llm":
            lora = spec.model.lora
            if lora.enabled:
                args += to_argv(lora, LoraOptions, prefix="lora-")
            else:
                args.append("--full-finetune")
        return StageCommand(stage, args, distributed=True)
    if stage == "evaluate":
        assert spec.data.test is not None  # the spec validator guarantees it
        args = [
            "evaluate",
            "--model", posixpath.join(layout.stage_dir("train"), "export"),
            "--reference-model", layout.model(spec.model.source),
            "--manifest", layout.data(spec.data.test),
            "--output-dir", out,
            "--family", family,
            *_language_args(spec),
            *to_argv(spec.evaluation, EvaluateOptions),
            *_decoding_args(spec),
        ]  # fmt: skip
        return StageCommand(stage, args)
    raise ValueError(f"unknown stage {stage!r}")
