"""`marco run`: the command line of the local driver (`local.py`) and its view.

Kept apart from `local.py` so the driver and its terminal view (`local_view.py`)
each import only what they use, and neither imports the other.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from contextlib import suppress
from pathlib import Path

from marco_contract.status import AsrAdaptationStatus
from marco_operator import local
from marco_operator.local import (
    Interrupted,
    LocalRun,
    RunBusy,
    SpecFrozen,
    load_manifest,
    run_until_done,
)
from marco_operator.local_processes import ChildrenLeft
from marco_operator.local_view import LocalView

#: Exit status when another `marco run` holds the run directory.
EXIT_BUSY = 3


def _say(message: str) -> None:
    # After SIGHUP the terminal may be gone: what is said then is lost, not an error.
    with suppress(OSError):
        print(message, file=sys.stderr, flush=True)


def _command(args: argparse.Namespace) -> int:
    manifest_path = Path(args.file)
    try:
        manifest = load_manifest(manifest_path)
        run = LocalRun(
            manifest=manifest,
            data_dir=Path(args.data_dir or manifest_path.parent),
            output_dir=Path(args.output_dir),
            metrics_port=args.metrics_port,
            nproc_per_node=args.nproc_per_node,
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    view = LocalView(run)
    try:
        # Every way out of here stops the stage processes (LocalRun.owned).
        with run.owned(say=_say):
            if args.retry:
                for event in run.retry():
                    _say(event.message)
            with view:
                status = run_until_done(run, args.interval, on_step=view.update)
            final = AsrAdaptationStatus.model_validate(status)
            view.summary(final)
            if final.phase == "Failed":
                _say("A Failed run stays Failed; add --retry to start again from the failed stage.")
            if final.phase != "Invalid":
                # The report draws with matplotlib, which lives with the trainer: run it there.
                report = subprocess.run(
                    [sys.executable, "-m", "marco_trainer", "report", "--run-dir", str(run.root)],
                    capture_output=True,
                    text=True,
                )
                print(report.stdout.strip() or report.stderr.strip())
    except RunBusy as error:
        _say(f"error: {error}")
        return EXIT_BUSY
    except SpecFrozen as error:  # refused before anything ran, as an invalid manifest is
        _say(f"error: {error}")
        return 2
    except ChildrenLeft as error:
        _say(f"error: could not stop a stage: {error}")
        return 1
    except Interrupted as stop:
        _say(f"\ninterrupted ({stop}); stages stopped, status saved in {run.status_path}. "
             "Run again to resume.")  # fmt: skip
        return stop.exit_code
    return 0 if final.phase in ("Succeeded", "EarlyStopped") else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run", help="run an AsrAdaptation on this machine (no cluster)", description=local.__doc__
    )
    parser.add_argument("-f", "--file", required=True, help="AsrAdaptation manifest (YAML)")
    parser.add_argument(
        "--data-dir", help="local directory standing for the data volume (default: manifest's dir)"
    )
    parser.add_argument("--output-dir", default="marco-runs", help="where outputs go")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between looks")
    parser.add_argument("--metrics-port", type=int, default=9400, help="trainer metrics port")
    parser.add_argument(
        "--nproc-per-node", type=int, default=1, help="training processes (torchrun standalone)"
    )
    parser.add_argument(
        "--retry",
        action="store_true",
        help="a run that ended Failed: start again from the stage that failed",
    )
    parser.set_defaults(func=_command)
