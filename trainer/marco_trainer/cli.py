"""`marco-trainer`: the trainer image's entrypoint, one subcommand per stage.

Each stage module exposes ``register(subparsers)`` which adds its parser and
sets ``func``. Heavy imports (torch, transformers) happen inside the stage
functions, so ``--help`` and argument errors are instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

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


def end_process(code: int) -> NoReturn:
    """Exit with ``code``; a rank of a torchrun group skips the interpreter's finalization.

    Why: a process group torch still holds at exit is torn down during finalization in
    no fixed order. FSDP's device mesh holds its group and stays referenced after
    ``destroy_process_group`` (from DTensor's cached sharding specs, among other places),
    so the group's gloo threads are still running when the interpreter ends; in CI that
    aborted a rank ("terminate called without an active exception", SIGABRT) after a
    run that had finished and written everything. torchrun then reports the group failed, and
    a deliberate code (143 after a SIGTERM checkpoint) becomes 134. Everything the stage
    wrote is closed by then; the logs are flushed here.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        sys.exit(code)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def entrypoint() -> NoReturn:
    """`marco-trainer` and `python -m marco_trainer`. An exception still takes the normal
    way out (traceback, exit 1)."""
    end_process(main())


if __name__ == "__main__":
    entrypoint()
