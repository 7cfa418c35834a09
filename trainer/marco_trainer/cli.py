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
    """Exit with ``code`` without the interpreter's finalization, logs and output flushed.

    Why: torch can leave native threads running into Python's teardown (a thread that
    then takes the GIL is ended by an unwind that a C++ ``noexcept`` frame turns into
    ``std::terminate``: the mechanism pytorch PR 179291 describes for gloo), and the
    process aborts ("terminate called without an active exception", SIGABRT) after a
    stage that finished and wrote everything. CI saw it twice: rank 1 of a two-rank
    FSDP run (its gloo group outlives ``destroy_process_group``: FSDP's device mesh
    holds it, referenced from DTensor's sharding caches) and a single-process trainer
    stopped by its directive. torchrun then reports the group failed, and a deliberate
    code (143 after a SIGTERM checkpoint) becomes 134 for the Job's pod failure policy.
    Every stage closes what it writes before it returns; nothing here registers an
    ``atexit`` hook.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def entrypoint() -> NoReturn:
    """`marco-trainer` and `python -m marco_trainer`. An exception, and argparse's exit on
    a bad argument, still take the normal way out (traceback or message, exit 1 or 2)."""
    end_process(main())


if __name__ == "__main__":
    entrypoint()
