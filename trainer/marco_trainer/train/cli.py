"""``marco-trainer train``: flags → :class:`TrainOptions` → the loop (torch imported late)."""

from __future__ import annotations

import argparse
import logging


def run_train(args: argparse.Namespace) -> int:
    from marco_trainer.train.options import TrainOptions

    try:
        opts = TrainOptions(
            model=args.model,
            train_manifests=args.train_manifest,
            validation_manifest=args.validation_manifest,
            output_dir=args.output_dir,
            control_file=args.control_file,
            learning_rate=args.learning_rate,
            max_steps=args.max_steps,
            eval_every=args.eval_every,
            eval_samples=args.eval_samples,
            eval_batch_size=args.eval_batch_size,
            per_device_batch_size=args.per_device_batch_size,
            gradient_accumulation=args.gradient_accumulation,
            precision=args.precision,
            gradient_checkpointing=args.gradient_checkpointing,
            family=args.family,
            lora_r=args.lora_r,
            lora_alpha=args.lora_alpha,
            lora_dropout=args.lora_dropout,
            lora_target_modules=tuple(m for m in args.lora_target_modules.split(",") if m),
            full_finetune=args.full_finetune,
            language=args.language,
            task=args.task,
            metrics_port=args.metrics_port,
            metrics_host=args.metrics_host,
            adaptation=args.adaptation,
            seed=args.seed,
            weight_decay=args.weight_decay,
            max_grad_norm=args.max_grad_norm,
            max_consecutive_nonfinite=args.max_consecutive_nonfinite,
            baseline_wer=args.baseline_wer,
            max_new_tokens=args.max_new_tokens,
            prefetch=args.prefetch,
            feature_cache_mb=args.feature_cache_mb,
        )
    except ValueError as error:
        raise SystemExit(f"marco-trainer train: {error}") from error

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from marco_trainer.runtime import quiet_transformers
    from marco_trainer.train.loop import run_training

    quiet_transformers()
    try:
        return run_training(opts)
    except ValueError as error:
        raise SystemExit(f"marco-trainer train: {error}") from error


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="fine-tune under torchrun with WER-driven directives",
        description=(
            "Runs as one process or under `torchrun --no-python ... marco-trainer train`. "
            "Resumes from OUTPUT_DIR/checkpoints/last when present."
        ),
    )
    p.add_argument("--model", required=True, help="model directory or Hub id (cached)")
    p.add_argument("--train-manifest", required=True, action="append", help="repeatable")
    p.add_argument("--validation-manifest", required=True)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--control-file", default=None, help="directive JSON written by the operator")
    p.add_argument("--learning-rate", type=float, default=1e-5, help="LR until a directive")
    p.add_argument("--max-steps", type=int, default=1000)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--eval-samples", type=int, default=200)
    p.add_argument("--eval-batch-size", type=int, default=8)
    p.add_argument("--per-device-batch-size", type=int, default=4)
    p.add_argument("--gradient-accumulation", type=int, default=8)
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--family", choices=("auto", "encoder-decoder", "llm"), default="auto")
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--lora-alpha", type=int, default=32)
    p.add_argument("--lora-dropout", type=float, default=0.05)
    p.add_argument("--lora-target-modules", default="q_proj,v_proj")
    p.add_argument("--full-finetune", action="store_true", help="LLM family: no LoRA")
    p.add_argument("--language", default="en")
    p.add_argument("--task", default="transcribe")
    p.add_argument("--metrics-port", type=int, default=9400, help="0 = no endpoint")
    p.add_argument("--metrics-host", default="0.0.0.0")
    p.add_argument("--adaptation", default=None, help="name used as the metrics label")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument(
        "--max-consecutive-nonfinite",
        type=int,
        default=3,
        help="non-finite steps in a row before rolling back to the best checkpoint",
    )
    p.add_argument("--baseline-wer", type=float, default=None, help="WER0 for the model card")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument(
        "--prefetch",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="load the next step's audio in a background thread "
        "(default: on with a GPU, off on CPU, where the step already uses every core)",
    )
    p.add_argument(
        "--feature-cache-mb",
        type=int,
        default=None,
        help="memory per rank for training utterances' features reused in later epochs "
        "(Whisper-style fixed windows; 0 = off; default: an eighth of the container's memory "
        "over the node's ranks, at most 2048)",
    )
    p.set_defaults(func=run_train)
