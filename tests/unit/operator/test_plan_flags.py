"""The plan's stage commands, read back by the trainer's own parsers.

The operator writes the flags (plan.py), the trainer parses them (its CLIs):
both derive them from `marco_contract.options`. These tests hold the two ends
together: every field of every shared options model is set to a non-default
value in one spec, the plan's command lines for it go through the trainer's
real parser, and each parsed value must be the one written out here by hand.
A field added to an options model fails `test_every_shared_field_is_checked`
until an expectation is written for it below — and that expectation passes
only if the field reaches the trainer's CLI.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml

import marco_contract.options as shared
from marco_contract.argv import parse_options
from marco_contract.options import DecodingOptions
from marco_operator.api import parse_spec
from marco_operator.plan import enabled_stages, stage_command, trial_command
from marco_operator.resources import Owner, cluster_layout
from marco_trainer.audio.filtering import FilterRules
from marco_trainer.cli import build_parser
from marco_trainer.train.options import TrainOptions

ROOT = Path(__file__).resolve().parents[3]
OWNER = Owner(name="flags", namespace="ns", uid="uid-1")

#: Every shared field away from its default (defaults: docs of marco_contract.options).
SPEC = {
    "model": {
        "source": "Qwen/Qwen2-Audio-7B",
        "family": "llm",
        "task": "translate",
        "language": "de",
        "lora": {"r": 8, "alpha": 64, "dropout": 0.1, "targetModules": ["q_proj", "up_proj"]},
    },
    "data": {"train": ["train.jsonl"], "validation": "dev.jsonl", "test": "test.jsonl",
             "targetAudio": "target/"},
    "filter": {"minDuration": 0.5, "maxDuration": 12.5, "maxCharsPerSecond": 22.5},
    "augmentation": {"copies": 3, "seed": 7, "rooms": 24, "channelFromTarget": True,
                     "speedFactors": [0.9, 1.1], "babbleTalkers": 3},
    "baseline": {"samples": 50},
    "training": {"maxSteps": 1234, "evalEvery": 20, "cycleSteps": 40, "evalSamples": 30,
                 "perDeviceBatchSize": 2, "gradientAccumulation": 3, "precision": "bf16",
                 "gradientCheckpointing": True, "strategy": "fsdp", "seed": 11,
                 "waitForDirective": False,
                 "directiveTimeoutSeconds": 42.5, "warmupSteps": 10, "warmupStartFactor": 0.5,
                 "specAugment": {"enabled": True, "maskTimeProb": 0.2, "maskTimeLength": 5,
                                 "maskTimeMinMasks": 1, "maskFeatureProb": 0.1,
                                 "maskFeatureLength": 4, "maskFeatureMinMasks": 2},
                 "freeze": {"encoder": True, "encoderLayers": 3},
                 "cleanSourceShare": 0.25, "averageCheckpoints": 4},
    "evaluation": {"maxSamples": 60},
    "decoding": {"maxNewTokens": 96, "tokensPerSecond": 6.5, "extraTokens": 4, "maxRepeats": 5,
                 "temperatureFallback": [0.3, 0.7], "compressionRatioThreshold": 2.0,
                 "logprobThreshold": -0.8},
}  # fmt: skip

#: (options model, field) -> (stage, what the trainer parsed, the value expected there).
EXPECTED = {
    ("LanguageOptions", "task"): ("train", "task", "translate"),
    ("LanguageOptions", "language"): ("train", "language", "de"),
    ("LoraOptions", "r"): ("train", "lora.r", 8),
    ("LoraOptions", "alpha"): ("train", "lora.alpha", 64),
    ("LoraOptions", "dropout"): ("train", "lora.dropout", 0.1),
    ("LoraOptions", "target_modules"): ("train", "lora.target_modules", ["q_proj", "up_proj"]),
    ("FilterOptions", "min_duration"): ("filter", "min_duration", 0.5),
    ("FilterOptions", "max_duration"): ("filter", "max_duration", 12.5),
    ("FilterOptions", "max_chars_per_second"): ("filter", "max_chars_per_second", 22.5),
    ("AugmentOptions", "copies"): ("augment", "copies", 3),
    ("AugmentOptions", "seed"): ("augment", "seed", 7),
    ("AugmentOptions", "rooms"): ("augment", "rooms", 24),
    ("AugmentOptions", "channel_from_target"): ("augment", "channel_from_target", True),
    ("AugmentOptions", "speed_factors"): ("augment", "speed_factors", [0.9, 1.1]),
    ("AugmentOptions", "babble_talkers"): ("augment", "babble_talkers", 3),
    ("EvaluateOptions", "max_samples"): ("evaluate", "max_samples", 60),
    ("TrainingOptions", "max_steps"): ("train", "max_steps", 1234),
    ("TrainingOptions", "eval_every"): ("train", "eval_every", 20),
    ("TrainingOptions", "eval_samples"): ("train", "eval_samples", 30),
    ("TrainingOptions", "per_device_batch_size"): ("train", "per_device_batch_size", 2),
    ("TrainingOptions", "gradient_accumulation"): ("train", "gradient_accumulation", 3),
    ("TrainingOptions", "precision"): ("train", "precision", "bf16"),
    ("TrainingOptions", "gradient_checkpointing"): ("train", "gradient_checkpointing", True),
    ("TrainingOptions", "strategy"): ("train", "strategy", "fsdp"),
    ("TrainingOptions", "seed"): ("train", "seed", 11),
    ("TrainingOptions", "cycle_steps"): ("train", "cycle_steps", 40),
    ("TrainingOptions", "wait_for_directive"): ("train", "wait_for_directive", False),
    ("TrainingOptions", "directive_timeout_seconds"): ("train", "directive_timeout_seconds", 42.5),
    ("RetentionOptions", "warmup_steps"): ("train", "warmup_steps", 10),
    ("RetentionOptions", "warmup_start_factor"): ("train", "warmup_start_factor", 0.5),
    ("RetentionOptions", "clean_source_share"): ("train", "clean_source_share", 0.25),
    ("RetentionOptions", "spec_augment"): (
        "train", "spec_augment",
        shared.SpecAugmentOptions(
            enabled=True, mask_time_prob=0.2, mask_time_length=5, mask_time_min_masks=1,
            mask_feature_prob=0.1, mask_feature_length=4, mask_feature_min_masks=2,
        ),
    ),
    ("RetentionOptions", "freeze"): (
        "train", "freeze", shared.FreezeOptions(encoder=True, encoder_layers=3)
    ),
    ("RetentionOptions", "average_checkpoints"): ("train", "average_checkpoints", 4),
    ("SpecAugmentOptions", "enabled"): ("train", "spec_augment.enabled", True),
    ("SpecAugmentOptions", "mask_time_prob"): ("train", "spec_augment.mask_time_prob", 0.2),
    ("SpecAugmentOptions", "mask_time_length"): ("train", "spec_augment.mask_time_length", 5),
    ("SpecAugmentOptions", "mask_time_min_masks"): (
        "train", "spec_augment.mask_time_min_masks", 1
    ),
    ("SpecAugmentOptions", "mask_feature_prob"): ("train", "spec_augment.mask_feature_prob", 0.1),
    ("SpecAugmentOptions", "mask_feature_length"): (
        "train", "spec_augment.mask_feature_length", 4
    ),
    ("SpecAugmentOptions", "mask_feature_min_masks"): (
        "train", "spec_augment.mask_feature_min_masks", 2
    ),
    ("FreezeOptions", "encoder"): ("train", "freeze.encoder", True),
    ("FreezeOptions", "encoder_layers"): ("train", "freeze.encoder_layers", 3),
    # Every decoding stage gets them: test_every_decoding_stage_decodes_alike checks all three.
    ("DecodingOptions", "max_new_tokens"): ("evaluate", "max_new_tokens", 96),
    ("DecodingOptions", "tokens_per_second"): ("evaluate", "tokens_per_second", 6.5),
    ("DecodingOptions", "extra_tokens"): ("evaluate", "extra_tokens", 4),
    ("DecodingOptions", "max_repeats"): ("evaluate", "max_repeats", 5),
    ("DecodingOptions", "temperature_fallback"): ("evaluate", "temperature_fallback", [0.3, 0.7]),
    ("DecodingOptions", "compression_ratio_threshold"): (
        "evaluate", "compression_ratio_threshold", 2.0),
    ("DecodingOptions", "logprob_threshold"): ("evaluate", "logprob_threshold", -0.8),
    # Not spec fields: the layout's volumes, which every stage gets (test_every_stage_is_confined).
    ("VolumeOptions", "data_root"): ("train", "data_root", "/data"),
    ("VolumeOptions", "output_root"): ("train", "output_root", "/output/marco-asr/flags"),
}  # fmt: skip


def commands(spec_data: dict) -> dict[str, list[str]]:
    spec = parse_spec(spec_data)
    layout = cluster_layout(spec, OWNER.name)
    return {
        stage: stage_command(
            spec, stage, layout, name=OWNER.name, family=spec.model.family or "encoder-decoder",
            learning_rate=2.5e-6,
        ).args
        for stage in enabled_stages(spec)
    }  # fmt: skip


def parsed(argv: list[str]):
    """What the trainer makes of a command line: its options model where it has one."""
    namespace = build_parser().parse_args(argv)  # an unknown flag exits: the test fails
    if argv[0] == "train":
        return parse_options(TrainOptions, namespace)
    if argv[0] == "filter":
        return parse_options(FilterRules, namespace)
    return namespace


def value_at(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def shared_models() -> list[type]:
    return [
        cls
        for _, cls in inspect.getmembers(shared, inspect.isclass)
        if issubclass(cls, shared.StageOptions)
        and cls is not shared.StageOptions
        and cls.__module__ == shared.__name__
    ]


def test_every_shared_field_is_checked():
    fields = {(cls.__name__, name) for cls in shared_models() for name in cls.model_fields}
    assert fields == set(EXPECTED)


def test_the_spec_moves_every_shared_field_off_its_default():
    # Otherwise a flag the plan forgot would still parse to the expected (default) value.
    models = {cls.__name__: cls for cls in shared_models()}
    for (model, name), (_, _, value) in EXPECTED.items():
        assert models[model].model_fields[name].get_default(call_default_factory=True) != value


@pytest.mark.parametrize("key", sorted(EXPECTED), ids=lambda k: f"{k[0]}.{k[1]}")
def test_the_trainer_parses_what_the_plan_writes(key):
    stage, path, value = EXPECTED[key]
    assert value_at(parsed(commands(SPEC)[stage]), path) == value


def test_every_decoding_stage_decodes_alike():
    """Baseline, train's validation and evaluate: one policy, so their WERs compare."""
    argv = commands(SPEC)
    expected = DecodingOptions(max_new_tokens=96, tokens_per_second=6.5, extra_tokens=4,
                               max_repeats=5, temperature_fallback=[0.3, 0.7],
                               compression_ratio_threshold=2.0, logprob_threshold=-0.8)  # fmt: skip
    for stage in ("baseline", "train", "evaluate"):
        namespace = build_parser().parse_args(argv[stage])
        assert parse_options(DecodingOptions, namespace) == expected, stage


def test_every_stage_is_confined_to_the_volumes():
    """Each stage reads manifests, audio or a model: each gets both roots to stay inside."""
    argv = commands(SPEC)
    spec = parse_spec({**SPEC, "trials": {"enabled": True}})
    layout = cluster_layout(spec, OWNER.name)
    argv["trials"] = trial_command(spec, layout, 0, 1e-6, name=OWNER.name, family="llm").args
    assert set(argv) == {
        "fetch", "filter", "profile", "augment", "baseline", "trials", "train", "evaluate",
    }  # fmt: skip
    for stage, args in argv.items():
        namespace = build_parser().parse_args(args)
        roots = (namespace.data_root, namespace.output_root)
        assert roots == ("/data", "/output/marco-asr/flags"), stage


def test_baseline_scores_the_spec_samples_in_the_spec_language():
    args = parsed(commands(SPEC)["baseline"])
    assert (args.max_samples, args.language, args.task) == (50, "de", "translate")
    assert args.family == "llm"


def test_train_gets_the_computed_values_and_paths():
    opts = parsed(commands(SPEC)["train"])
    out = "/output/marco-asr/flags"
    assert (opts.learning_rate, opts.family, opts.adaptation) == (2.5e-6, "llm", "flags")
    # A clean-source share: the augmented copies train, the clean source is drawn apart.
    assert opts.train_manifests == [f"{out}/augment"]
    assert opts.clean_manifests == [f"{out}/filter/kept.jsonl"]
    assert (opts.validation_manifest, str(opts.output_dir)) == ("/data/dev.jsonl", f"{out}/train")
    assert opts.full_finetune is False


def test_train_gets_the_baseline_wer_once_measured():
    spec = parse_spec(SPEC)
    layout = cluster_layout(spec, OWNER.name)

    def train(baseline_wer):
        return stage_command(
            spec, "train", layout, name=OWNER.name, family="llm", learning_rate=2.5e-6,
            baseline_wer=baseline_wer,
        ).args  # fmt: skip

    assert parsed(train(None)).baseline_wer is None
    assert parsed(train(31.25)).baseline_wer == 31.25
    # Only train takes it: the baseline's own command is the same either way.
    assert stage_command(spec, "baseline", layout, name=OWNER.name, family="llm",
                         baseline_wer=31.25).args == commands(SPEC)["baseline"]  # fmt: skip


def test_false_and_unset_values_are_passed_as_such():
    spec = {**SPEC, "training": {**SPEC["training"], "gradientCheckpointing": False},
            "model": {**SPEC["model"], "lora": {"enabled": False}},
            "evaluation": {}}  # fmt: skip
    argv = commands(spec)
    train = parsed(argv["train"])
    assert train.gradient_checkpointing is False and "--no-gradient-checkpointing" in argv["train"]
    assert train.full_finetune is True and not any(a.startswith("--lora") for a in argv["train"])
    assert "--max-samples" not in argv["evaluate"]  # all test utterances
    assert parsed(argv["evaluate"]).max_samples is None


def test_the_demo_commands_are_unchanged():
    """The demo's stage commands as the plan wrote them before the shared options
    (main at 1605497), except `--no-gradient-checkpointing` and `--seed 0`, the
    defaults' values made explicit, the cycle boundary's flags (`--cycle-steps` ...
    `--directive-timeout-seconds`, issue 16: the trainer waits there for the next directive),
    the retention options at their neutral defaults, the decoding policy (issue 16: on
    by default, since on the demo data it changed only runaway hypotheses; docs/method.md),
    the volumes every stage is confined to (`--data-root`, `--output-root`, issue 13),
    where rank 0's endpoint binds and asks for its token (`--metrics-host` ...
    `--api-token-file`, issue 13 point 7), and evaluate's `--export-checkpoint` (issue 14):
    the demo's WER numbers depend on these lines."""
    decoding = ("--max-new-tokens 128 --tokens-per-second 8.0 --extra-tokens 10 --max-repeats 3 "
                "--temperature-fallback 0.2,0.4,0.6,0.8,1.0 "
                "--compression-ratio-threshold 1.35")  # fmt: skip
    obj = yaml.safe_load((ROOT / "examples" / "demo-local.yaml").read_text())
    spec = parse_spec(obj["spec"])
    owner = Owner(name=obj["metadata"]["name"], namespace="default", uid="u")
    layout = cluster_layout(spec, owner.name)
    out = "/output/marco-asr/demo-callcentre"
    model = "/data/models/whisper-tiny.en-10s"
    roots = f"--data-root /data --output-root {out}"
    lines = {
        stage: " ".join(
            stage_command(
                spec, stage, layout, name=owner.name, family="encoder-decoder",
                learning_rate=1e-5,
            ).args
        )
        for stage in enabled_stages(spec)
    }  # fmt: skip
    assert lines == {
        "filter": f"filter --output-dir {out}/filter {roots} --manifest /data/source/train.jsonl "
        "--min-duration 0.3 --max-duration 10.0 --max-chars-per-second 30.0",
        "profile": f"profile --input /data/target/unlabeled.jsonl --output-dir {out}/profile "
        f"{roots}",
        "augment": f"augment --output-dir {out}/augment {roots} --copies 1 --seed 0 --rooms 8 "
        "--no-channel-from-target --babble-talkers 0 "
        f"--manifest {out}/filter/kept.jsonl --profile {out}/profile",
        "baseline": f"evaluate --model {model} --manifest /data/target/dev.jsonl "
        f"--output-dir {out}/baseline {roots} --max-samples 100 --family encoder-decoder "
        f"--task transcribe --language en {decoding}",
        "train": f"train --model {model} --validation-manifest /data/target/dev.jsonl "
        f"--output-dir {out}/train {roots} --control-file /etc/marco/control/directive.json "
        "--learning-rate 1e-05 --max-steps 300 --eval-every 25 --eval-samples 40 "
        "--per-device-batch-size 8 --gradient-accumulation 1 --precision fp32 "
        "--no-gradient-checkpointing --strategy ddp --seed 0 --cycle-steps 75 --wait-for-directive "
        "--directive-timeout-seconds 300.0 "
        # The retention options (issue 16), each at its neutral default.
        "--warmup-steps 0 --warmup-start-factor 0.1 --no-spec-augment-enabled "
        "--spec-augment-mask-time-prob 0.05 --spec-augment-mask-time-length 10 "
        "--spec-augment-mask-time-min-masks 2 --spec-augment-mask-feature-prob 0.0 "
        "--spec-augment-mask-feature-length 10 --spec-augment-mask-feature-min-masks 0 "
        "--no-freeze-encoder --freeze-encoder-layers 0 --average-checkpoints 1 "
        "--family encoder-decoder --adaptation demo-callcentre "
        "--metrics-port 9400 --metrics-host 0.0.0.0 --api-port 9401 "
        "--api-token-file /etc/marco/endpoint/token --task transcribe --language en "
        f"{decoding} --train-manifest {out}/filter/kept.jsonl --train-manifest {out}/augment",
        # --export-checkpoint: evaluate exports train's best checkpoint when train was stopped
        # before its own export (a stop the operator enforced, issue 14); else unused.
        "evaluate": f"evaluate --model {out}/train/export "
        f"--export-checkpoint {out}/train/checkpoints/best --reference-model {model} "
        f"--manifest /data/target/test.jsonl --output-dir {out}/evaluate {roots} "
        f"--family encoder-decoder --task transcribe --language en {decoding}",
    }


def test_a_trial_is_train_cut_short_at_a_fixed_lr_and_the_trainer_parses_it():
    spec = parse_spec({**SPEC, "trials": {"enabled": True, "steps": 7, "evalEvery": 3}})
    layout = cluster_layout(spec, OWNER.name)
    command = trial_command(spec, layout, 2, 4e-6, name=OWNER.name, family="llm")
    opts = parsed(command.args)
    out = "/output/marco-asr/flags"
    assert (command.stage, command.trial, command.distributed) == ("trials", 2, False)
    assert (opts.max_steps, opts.eval_every, opts.learning_rate) == (7, 3, 4e-6)
    assert (opts.control_file, opts.metrics_port, opts.export) == (None, 0, False)
    assert opts.wait_for_directive is False  # nothing will come at a cycle's boundary
    assert str(opts.output_dir) == f"{out}/trials/lr-2"
    # The rest is what train gets: the spec's batch, samples, data and LoRA settings.
    train = parsed(commands(SPEC)["train"])
    same = (
        "eval_samples", "per_device_batch_size", "gradient_accumulation", "precision",
        "train_manifests", "validation_manifest", "lora", "language", "family", "seed",
    )  # fmt: skip
    assert {k: getattr(opts, k) for k in same} == {k: getattr(train, k) for k in same}


def test_without_a_clean_share_the_clean_source_is_concatenated_as_before():
    training = {k: v for k, v in SPEC["training"].items() if k != "cleanSourceShare"}
    opts = parsed(commands({**SPEC, "training": training})["train"])
    out = "/output/marco-asr/flags"
    assert opts.train_manifests == [f"{out}/filter/kept.jsonl", f"{out}/augment"]
    assert opts.clean_manifests == [] and opts.clean_source_share is None


@pytest.mark.parametrize(
    "augmentation",
    [{"enabled": False}, {"keepOriginal": False}],
    ids=["no-augmentation", "no-keep-original"],
)
def test_a_clean_share_without_augmented_copies_of_the_source_is_refused(augmentation):
    from pydantic import ValidationError

    from marco_operator.api import describe_error

    with pytest.raises(ValidationError) as error:
        parse_spec({**SPEC, "augmentation": augmentation})
    assert describe_error(error.value) == (
        "spec: training.cleanSourceShare needs augmentation.enabled and augmentation.keepOriginal"
    )


def test_an_unknown_training_strategy_is_refused_naming_the_field():
    from pydantic import ValidationError

    from marco_operator.api import describe_error

    with pytest.raises(ValidationError) as error:
        parse_spec({**SPEC, "training": {**SPEC["training"], "strategy": "zero3"}})
    message = describe_error(error.value)
    assert "training.strategy" in message and "'ddp'" in message and "'fsdp'" in message
