"""The stage graph and each stage's trainer command line.

Stages run in order: fetch → filter → profile → augment → baseline → trials →
train → evaluate → push; the spec turns stages off (fetch runs only when
something is remote, push only when asked for). The trials stage is several commands, one
per candidate LR (`trial_command`). Both drivers use this module: the kopf driver wraps
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
from dataclasses import dataclass, field, replace

from marco_contract.argv import to_argv
from marco_contract.layout import FETCH_STAGE, PUSH_STAGE, STAGES, Layout
from marco_contract.options import (
    AugmentOptions,
    DecodingOptions,
    EvaluateOptions,
    FilterOptions,
    LanguageOptions,
    LoraOptions,
    RetentionOptions,
    TrainingOptions,
)
from marco_contract.status import Phase
from marco_operator.api import AsrAdaptationSpec

PHASE_OF_STAGE: dict[str, Phase] = {
    "fetch": "Fetching",
    "filter": "Filtering",
    "profile": "Profiling",
    "augment": "Augmenting",
    "baseline": "Baseline",
    "trials": "Trials",
    "train": "Training",
    "evaluate": "Evaluating",
    "push": "Pushing",
}

#: Stages that load the model and want GPUs.
GPU_STAGES = frozenset({"baseline", "trials", "train", "evaluate"})
#: Stages that talk to the hub or an object store: the only ones online, with the token.
ONLINE_STAGES = frozenset({FETCH_STAGE, PUSH_STAGE})
#: The environment that keeps every other stage off the network: what the hub client and
#: transformers would download is on the volumes already, and a miss fails loudly.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
#: torchrun's environment (the train stage, either driver). torch shares the c10d
#: rendezvous's TCPStore with the workers by default and keeps that one store server for
#: every restart round, without a per-round prefix on the workers' keys: a restarted round's
#: gloo connectFullMesh then reads the killed round's addresses (connection refused on a
#: dead port) and its store barriers count the old round's arrivals too (a hang). pytorch
#: issue 135712; still so in torch 2.11. Unshared, each round's workers bootstrap a fresh
#: store on a fresh port (rank 0's), so no round reads another's keys.
TORCHRUN_ENV = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
#: The variable the hub client reads its token from (model.tokenSecret's value).
TOKEN_ENV = "HF_TOKEN"


def remote_model(spec: AsrAdaptationSpec) -> bool:
    """A hub id (the fetch stage downloads it), not a folder on the data volume."""
    return not posixpath.isabs(spec.model.source)


def fetches(spec: AsrAdaptationSpec) -> bool:
    """Whether anything is remote: the fetch stage is on."""
    return remote_model(spec) or bool(spec.data.sources)


def hub_token_used(spec: AsrAdaptationSpec, stage: str) -> bool:
    """Whether `stage` gets model.tokenSecret's token: only the stages that talk to a hub."""
    return spec.model.token_secret is not None and stage in ONLINE_STAGES


def stage_env(spec: AsrAdaptationSpec, stage: str, layout: Layout) -> dict[str, str]:
    """What the plan sets in a stage's environment, either driver: HF_HOME on the output
    volume (the hub client's cache, shared by every stage and node), offline but for the
    stages that fetch and push, and for train torchrun's TORCHRUN_ENV. The token is no
    value here: each driver adds its own (a Secret reference in a pod, the caller's
    environment locally)."""
    env = {"HF_HOME": layout.run.hf_home}
    if stage not in ONLINE_STAGES:
        env.update(OFFLINE_ENV)
    if stage == "train":
        env.update(TORCHRUN_ENV)
    return env


def enabled_stages(spec: AsrAdaptationSpec) -> list[str]:
    switches = {
        "fetch": fetches(spec),
        "filter": spec.filter.enabled,
        "profile": spec.profile.enabled,
        "augment": spec.augmentation.enabled,
        "baseline": spec.baseline.enabled,
        "trials": spec.trials.enabled,
        "train": True,
        "evaluate": spec.evaluation.enabled,
        "push": spec.output.push is not None,
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
    if mixes_clean_source(spec):
        return augmented  # the clean source goes as --clean-manifest (clean_manifests)
    return sources + augmented if spec.augmentation.keep_original else augmented


def mixes_clean_source(spec: AsrAdaptationSpec) -> bool:
    """Whether the trainer draws the clean source at training.cleanSourceShare of each batch."""
    return spec.training.clean_source_share is not None and spec.augmentation.enabled


def clean_manifests(spec: AsrAdaptationSpec, layout: Layout) -> list[str]:
    """The clean source, apart from the augmented copies, when the trainer mixes a share of it."""
    return source_manifests(spec, layout) if mixes_clean_source(spec) else []


@dataclass(frozen=True)
class StageCommand:
    stage: str
    args: list[str]  # marco-trainer arguments, subcommand first
    shards: int = 1
    distributed: bool = False  # run under torchrun
    trial: int | None = None  # which LR trial, for the trials stage's commands
    #: Environment variables the stage needs (stage_env), set by either driver.
    env: dict[str, str] = field(default_factory=dict)


def _language_args(spec: AsrAdaptationSpec) -> list[str]:
    return to_argv(spec.model, LanguageOptions)


def _volume_args(layout: Layout) -> list[str]:
    """--data-root and --output-root: every stage reads only inside the volumes."""
    return to_argv(layout.volumes)


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
    baseline_wer: float | None = None,
) -> StageCommand:
    """The `marco-trainer` command of one stage (contract: docs/architecture.md).

    `baseline_wer` (percent), when the baseline measured it, goes to train: its model
    card and its `marco_trainer_baseline_wer_ratio` (the dashboard's baseline line).
    """
    command = _stage_command(
        spec,
        stage,
        layout,
        name=name,
        family=family,
        learning_rate=learning_rate,
        baseline_wer=baseline_wer,
    )
    return replace(command, env=stage_env(spec, stage, layout))


def _stage_command(
    spec: AsrAdaptationSpec,
    stage: str,
    layout: Layout,
    *,
    name: str,
    family: str,
    learning_rate: float | None,
    baseline_wer: float | None,
) -> StageCommand:
    out = layout.stage_dir(stage)
    if stage == FETCH_STAGE:
        args = ["fetch", "--output-dir", out, *_volume_args(layout)]
        if remote_model(spec):
            args += ["--model", spec.model.source, "--model-dir", layout.run.fetched_model]
            if spec.model.revision:
                args += ["--revision", spec.model.revision]
        for source in spec.data.sources:
            args += ["--source", source.uri, layout.data(source.path)]
        return StageCommand(stage, args)
    if stage == PUSH_STAGE:
        push = spec.output.push
        assert push is not None  # enabled_stages runs push only when asked for
        args = ["push", "--model", layout.run.exported_model, "--to", push.uri,
                "--output-dir", out, *_volume_args(layout),
                "--commit-message", push.commit_message]  # fmt: skip
        args.append("--private" if push.private else "--public")
        return StageCommand(stage, args)
    if stage == "filter":
        args = ["filter", "--output-dir", out, *_volume_args(layout)]
        for manifest in spec.data.train:
            args += ["--manifest", layout.data(manifest)]
        args += to_argv(spec.filter, FilterOptions)
        return StageCommand(stage, args)
    if stage == "profile":
        assert spec.data.target_audio is not None  # the spec validator guarantees it
        args = ["profile", "--input", layout.data(spec.data.target_audio), "--output-dir", out,
                *_volume_args(layout)]  # fmt: skip
        return StageCommand(stage, args, shards=spec.profile.shards)
    if stage == "augment":
        aug = spec.augmentation
        args = ["augment", "--output-dir", out, *_volume_args(layout),
                *to_argv(aug, AugmentOptions)]  # fmt: skip
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
            *_volume_args(layout),
            *to_argv(EvaluateOptions(max_samples=spec.baseline.samples)),
            "--family", family,
            *_language_args(spec),
            *_decoding_args(spec),
        ]  # fmt: skip
        return StageCommand(stage, args, shards=spec.baseline.shards)
    if stage == "train":
        if learning_rate is None:
            raise ValueError("the train stage needs its initial learning rate")
        args = _train_args(
            spec,
            layout,
            out,
            learning_rate,
            spec.training,
            family=family,
            name=name,
            control_file=layout.control_file,
            metrics_port=layout.metrics_port,
        )
        if baseline_wer is not None:
            args += ["--baseline-wer", repr(baseline_wer)]
        return StageCommand(stage, args, distributed=True)
    if stage == "trials":
        raise ValueError("the trials stage runs one command per LR: use trial_command")
    if stage == "evaluate":
        assert spec.data.test is not None  # the spec validator guarantees it
        args = [
            "evaluate",
            "--model", layout.run.exported_model,
            # A train stage whose stop was enforced (core._enforce_stop) exported nothing:
            # evaluate exports its best checkpoint first.
            "--export-checkpoint", layout.run.best_checkpoint,
            "--reference-model", layout.model(spec.model.source),
            "--manifest", layout.data(spec.data.test),
            "--output-dir", out,
            *_volume_args(layout),
            "--family", family,
            *_language_args(spec),
            *to_argv(spec.evaluation, EvaluateOptions),
            *_decoding_args(spec),
        ]  # fmt: skip
        return StageCommand(stage, args, shards=spec.evaluation.shards)
    raise ValueError(f"unknown stage {stage!r}")


def _endpoint_args(layout: Layout, metrics_port: int) -> list[str]:
    """Where rank 0 serves (`--metrics-port 0`: nowhere, and nothing else to say)."""
    args = ["--metrics-port", str(metrics_port)]
    if metrics_port:
        args += ["--metrics-host", layout.endpoint_host]
        if layout.api_port is not None:
            args += ["--api-port", str(layout.api_port)]
        if layout.api_token_file is not None:
            args += ["--api-token-file", layout.api_token_file]
    return args


def _train_args(
    spec: AsrAdaptationSpec,
    layout: Layout,
    out: str,
    learning_rate: float,
    training: TrainingOptions,
    *,
    family: str,
    name: str,
    control_file: str | None,
    metrics_port: int,
    export: bool = True,
) -> list[str]:
    """`marco-trainer train` from the model's initial weights: what train and a trial share.

    Without a control file nothing steers the run: it keeps `learning_rate`.
    """
    steering = ["--control-file", control_file] if control_file else []
    args = [
        "train",
        "--model", layout.model(spec.model.source),
        "--validation-manifest", layout.data(spec.data.validation),
        "--output-dir", out,
        *_volume_args(layout),
        *steering,
        "--learning-rate", repr(learning_rate),
        *to_argv(training, TrainingOptions),
        *to_argv(spec.training, RetentionOptions),
        "--family", family,
        "--adaptation", name,
        *_endpoint_args(layout, metrics_port),
        *_language_args(spec),
        *_decoding_args(spec),
    ]  # fmt: skip
    if not export:
        args.append("--no-export")
    for manifest in train_manifests(spec, layout):
        args += ["--train-manifest", manifest]
    for manifest in clean_manifests(spec, layout):
        args += ["--clean-manifest", manifest]
    if family == "llm":
        lora = spec.model.lora
        if lora.enabled:
            args += to_argv(lora, LoraOptions, prefix="lora-")
        else:
            args.append("--full-finetune")
    return args


def trial_command(
    spec: AsrAdaptationSpec,
    layout: Layout,
    index: int,
    learning_rate: float,
    *,
    name: str,
    family: str,
) -> StageCommand:
    """One LR trial: the train command, cut to `trials.steps`, at one fixed LR.

    No control file (nothing steers it: the LR stays put), no metrics endpoint
    (the result carries its WER curve), no export (only its curve is wanted),
    its own folder. The rest of the training budget and batch is train's, so a
    trial measures the first steps that train would take at that LR.
    """
    trials = spec.trials
    # No directive ever comes: a cycle's boundary must not make the trial wait for one.
    budget = spec.training.model_copy(
        update={
            "max_steps": trials.steps,
            "eval_every": trials.eval_every,
            "wait_for_directive": False,
        }
    )
    out = layout.run.trial_dir(index)
    args = _train_args(
        spec,
        layout,
        out,
        learning_rate,
        budget,
        family=family,
        name=name,
        control_file=None,
        metrics_port=0,
        export=False,
    )
    return StageCommand("trials", args, trial=index, env=stage_env(spec, "trials", layout))
