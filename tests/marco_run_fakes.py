"""`marco run` with its stages played by a small script, for tests of how the driver
treats its processes (tests/integration/test_marco_run_processes.py).

    python -m tests.marco_run_fakes driver RUN-ARGS...   the real `marco run RUN-ARGS`,
        in a process of its own, with LocalRun.command_line starting `stage` below
        instead of the trainer (the seam test_trials.py uses in-process)
    python -m tests.marco_run_fakes stage TRAINER-ARGS...  one fake stage

A fake stage reads what to do from files in `$MARCO_FAKE_CONTROL`, named after
its stage (`<stage>` is the trainer subcommand: filter, train, ...), and says what
it did there, so a test waits for files instead of sleeping:

- it first takes an exclusive flock on `<its output dir>/.busy`; when another
  process holds it, it exits 1 ("busy"), as a second trainer on a directory dies
  (EADDRINUSE on the metrics port): two stage processes on one directory fail;
- it appends its PID to `<stage>.starts`, starts a child that idles in its
  process group and, once it handles SIGTERM, writes that child's PID to
  `<stage>.child`;
- it then waits for `<stage>.go`; on SIGTERM it appends its PID to
  `<stage>.terminated` (the trainer saves its checkpoint there) and exits 143;
- given `<stage>.go`, it exits 1 if `<stage>.fail` exists, else writes its
  `result.json` and exits 0, stopping its child either way.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

CONTROL_ENV = "MARCO_FAKE_CONTROL"
#: Seconds between looks for the go-file.
POLL = 0.02


def _append(path: Path, line: str) -> None:
    with path.open("a") as handle:
        handle.write(line + "\n")


def stage(args: list[str]) -> int:
    from marco_contract.formats import StageResult
    from marco_contract.results import write_stage_result

    name = args[0]
    output = Path(args[args.index("--output-dir") + 1])
    control = Path(os.environ[CONTROL_ENV])
    output.mkdir(parents=True, exist_ok=True)
    busy = (output / ".busy").open("a")
    try:
        fcntl.flock(busy, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"busy: another process runs in {output}", flush=True)
        return 1
    _append(control / f"{name}.starts", str(os.getpid()))
    child = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        _append(control / f"{name}.terminated", str(os.getpid()))
        child.terminate()
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    (control / f"{name}.child").write_text(f"{child.pid}\n")  # from here on, SIGTERM is seen
    while not (control / f"{name}.go").exists():
        time.sleep(POLL)
    child.terminate()
    child.wait()
    if (control / f"{name}.fail").exists():
        print(f"{name}: failed as told", flush=True)
        return 1
    write_stage_result(StageResult(stage=name, wer=10.0, steps=1, best_step=1), output)
    return 0


def driver(args: list[str]) -> int:
    from marco_operator.cli import main
    from marco_operator.local import LocalRun
    from marco_operator.plan import StageCommand

    def command_line(self: LocalRun, command: StageCommand) -> list[str]:
        return [sys.executable, "-m", "tests.marco_run_fakes", "stage", *command.args]

    LocalRun.command_line = command_line  # type: ignore[method-assign]
    return main(["run", *args])


if __name__ == "__main__":
    role, *rest = sys.argv[1:]
    sys.exit({"driver": driver, "stage": stage}[role](rest))
