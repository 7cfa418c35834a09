"""`marco-trainer`: the trainer image's entrypoint, one subcommand per stage.

Each stage module exposes ``register(subparsers)`` which adds its parser and
sets ``func``. Heavy imports (torch, transformers) happen inside the stage
functions, so ``--help`` and argument errors are instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Stage modules, in pipeline order. A module listed here owns its subcommand(s).
STAGE_MODULES: tuple[str, ...] = (
    "marco_trainer.remote",
    "marco_trainer.audio.cli_filter",
    "marco_trainer.audio.cli_profile",
    "marco_trainer.audio.cli_augment",
    "marco_trainer.evaluate",
    "marco_trainer.train.cli",
    "marco_trainer.export",
    "marco_trainer.audio.cli_profile_report",
    "marco_trainer.report",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="marco-trainer", description="marco-asr data plane: one subcommand per stage."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in STAGE_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
