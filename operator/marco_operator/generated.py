"""Commands that write a generated file (CRD, RBAC rules, dashboard): one behaviour for all.

`-o -` prints it; `-o PATH` writes it atomically (a directory gets the default
file name); `--check` exits 1 when the committed file differs, naming the
command that refreshes it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path


def add_generator(
    subparsers: argparse._SubParsersAction,
    command: str,
    help_text: str,
    render: Callable[[], str],
    default_name: str,
) -> None:
    parser = subparsers.add_parser(command, help=help_text)
    parser.add_argument("--output", "-o", default="-", help="file or directory (default: stdout)")
    parser.add_argument("--check", action="store_true", help="exit 1 if the file differs")
    parser.set_defaults(
        func=lambda args: write_generated(render(), args.output, args.check, command, default_name)
    )


def write_generated(text: str, output: str, check: bool, command: str, default_name: str) -> int:
    if output in ("", "-"):
        sys.stdout.write(text)
        return 0
    path = Path(output)
    if path.is_dir() or output.endswith("/"):
        path = path / default_name
    if check:
        if not path.exists() or path.read_text() != text:
            print(f"{path} is stale: run `marco {command} --output {output}`", file=sys.stderr)
            return 1
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    print(f"wrote {path}")
    return 0
