"""`marco`: the control plane's command line (crd, operator, run, rbac, dashboard).

Each command module exposes ``register(subparsers)`` which adds its parser and
sets ``func``; imports of kopf and friends stay inside the command functions.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMAND_MODULES: tuple[str, ...] = (
    "marco_operator.crd",
    "marco_operator.local_cli",
    "marco_operator.rbac",
    "marco_operator.dashboard",
    "marco_operator.kopf_driver",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="marco", description="marco-asr control plane.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
