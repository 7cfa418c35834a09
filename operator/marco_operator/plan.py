"""The stage graph and each stage's trainer command line.

Stages run in order: filter → profile → augment → baseline → train → evaluate;
the spec turns stages off. Both drivers use this module: the kopf driver wraps
the commands into Jobs (resources.py), the local driver runs them as
subprocesses. Paths go through a `Layout`, which maps the spec's volume paths
onto the pod's mounts or onto local directories.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from marco_contract.layout import STAGES, Layout
from marco_operator.api import AsrAdaptationSpec

PHASE_OF_STAGE: dict[str, str] = {
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
    args = ["--task", spec.model.task]
    if spec.model.language:
        args += ["--language", spec.model.language]
    return args


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
        args += [
            "--min-duration", str(spec.filter.min_duration),
            "--max-duration", str(spec.filter.max_duration),
            "--max-chars-per-second", str(spec.filter.max_chars_per_second),
        ]  # fmt: skip
        return StageCommand(stage, args)
    if stage == "profile":
        assert spec.data.target_audio is not None  # the spec validator guarantees it
        args = ["profile", "--input", layout.data(spec.data.target_audio), "--output-dir", out]
        return StageCommand(stage, args, shards=spec.profile.shards)
    if stage == "augment":
        aug = spec.augmentation
        args = ["augment", "--output-dir", out, "--copies", str(aug.copies)]
        args += ["--seed", str(aug.seed)]
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
            "--max-samples", str(spec.baseline.samples),
            "--family", family,
            *_language_args(spec),
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
            "--max-steps", str(training.max_steps),
            "--eval-every", str(training.eval_every),
            "--eval-samples", str(training.eval_samples),
            "--per-device-batch-size", str(training.per_device_batch_size),
            "--gradient-accumulation", str(training.gradient_accumulation),
            "--precision", training.precision,
            "--family", family,
            "--adaptation", name,
            "--metrics-port", str(layout.metrics_port),
            *_language_args(spec),
        ]  # fmt: skip
        for manifest in train_manifests(spec, layout):
            args += ["--train-manifest", manifest]
        if training.gradient_checkpointing:
            args.append("--gradient-checkpointing")
        if family == "llm":
            lora = spec.model.lora
            if lora.enabled:
                args += [
                    "--lora-r", str(lora.r),
                    "--lora-alpha", str(lora.alpha),
                    "--lora-dropout", str(lora.dropout),
                    "--lora-target-modules", ",".join(lora.target_modules),
                ]  # fmt: skip
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
        ]  # fmt: skip
        if spec.evaluation.max_samples:
            args += ["--max-samples", str(spec.evaluation.max_samples)]
        return StageCommand(stage, args)
    raise ValueError(f"unknown stage {stage!r}")
