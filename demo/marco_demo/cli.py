"""`python -m marco_demo`: build the demo's inputs, one subcommand per job.

``data`` synthesises the demo's speech data sets; ``scenario`` one of the benchmark
scenarios (:mod:`marco_demo.scenarios`); ``import-ct2`` turns the
offline Whisper tiny.en (CTranslate2) into a Hugging Face model directory. Each
module exposes ``register(subparsers)``, as the trainer's stage modules do, and
keeps its heavy imports inside its functions, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# A module listed here owns its subcommand.
COMMAND_MODULES: tuple[str, ...] = (
    "marco_demo.data",
    "marco_demo.scenarios",
    "marco_demo.ct2_import",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m marco_demo",
        description="marco-asr demo: synthesised speech data and the offline Whisper import.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
