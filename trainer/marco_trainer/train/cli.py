"""``marco-trainer train``: flags → :class:`TrainOptions` → the loop (torch imported late).

The parser is built from :class:`TrainOptions` (`marco_contract.argv`): one flag
per field, with the model's default, choices and help, and parsed back into it.
"""

from __future__ import annotations

import argparse
import logging


def run_train(args: argparse.Namespace) -> int:
    from marco_contract.argv import parse_options
    from marco_contract.exit_codes import refuse
    from marco_trainer.train.options import TrainOptions

    try:
        opts = parse_options(TrainOptions, args)
    except ValueError as error:
        # Outside the spec's bounds: every retry would be refused the same way.
        refuse(f"marco-trainer train: {error}")

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


def register(subparsers: argparse._SubParsersAction) -> None:
    from marco_contract.argv import add_arguments
    from marco_trainer.train.options import TrainOptions

    p = subparsers.add_parser(
        "train",
        help="fine-tune under torchrun with WER-driven directives",
        description=(
            "Runs as one process or under `torchrun --no-python ... marco-trainer train`. "
            "Resumes from OUTPUT_DIR/checkpoints/last when present."
        ),
    )
    add_arguments(p, TrainOptions)
    p.set_defaults(func=run_train)
