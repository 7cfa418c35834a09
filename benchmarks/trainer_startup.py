"""How long a train pod's rank 0 refuses the operator: from process start to serving.

The operator reads rank 0's `/v1/evaluations` as soon as the train pod runs, and counts a
refused connection as a `trainer` error only past `rank0.TRAINER_STARTUP_SECONDS` after
the trainer container started. The trainer serves before it loads the model; what is left
is the interpreter, torchrun, the imports and the process group. This measures it with the
real CLI (`marco-trainer train`, one process and torchrun with two), polling the port
every 20 ms from the moment the process is spawned:

- serving: the first answer of `/v1/evaluations` (an empty history);
- model ready: rank 0's log line after the model is loaded (where rank 0 began to serve
  before it served first; it served later still, after the data and the resume);
- first evaluation: the history's first evaluation.

    PYTHONPATH=contract:operator:trainer:demo .venv/bin/python benchmarks/trainer_startup.py \
        [--model DIR] [--repeats 3] [--out benchmarks/results/trainer_startup]

Without --model, a tiny random Whisper built in code (the loading is then short; a real
checkpoint, e.g. the 10 s-window Whisper tiny.en of the adaptation benchmark, shows the
gap). Writes <out>.json and <out>.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

from tests.tiny_models import build_tiny_whisper, write_speech_manifest  # noqa: E402
from tests.trainer_runs import free_port, train_args, trainer_command, trainer_env  # noqa: E402

POLL = 0.02
MODEL_READY = "model ready"


@dataclass
class Start:
    nproc: int
    serving: float | None = None
    model_ready: float | None = None
    first_evaluation: float | None = None
    exit: float | None = None
    returncode: int | None = None


def _read(port: int) -> dict | None:
    url = f"http://127.0.0.1:{port}/v1/evaluations"
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def one_start(model: Path, manifest: Path, work: Path, nproc: int) -> Start:
    port = free_port()
    args = train_args(model, manifest, work, metrics_port=port, max_steps=2, eval_every=2,
                      max_new_tokens=4, per_device_batch_size=2)  # fmt: skip
    began = time.monotonic()
    process = subprocess.Popen(
        trainer_command(*args, nproc=nproc),
        env=trainer_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    start = Start(nproc=nproc)

    log: list[str] = []

    def watch_log() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            log.append(line)
            if MODEL_READY in line and "rank 0" in line and start.model_ready is None:
                start.model_ready = time.monotonic() - began

    reader = threading.Thread(target=watch_log, daemon=True)
    reader.start()
    while process.poll() is None:
        history = _read(port)
        if history is not None:
            if start.serving is None:
                start.serving = time.monotonic() - began
            if history.get("evaluations") and start.first_evaluation is None:
                start.first_evaluation = time.monotonic() - began
                break
        time.sleep(POLL)
    start.returncode = process.wait(timeout=600)
    start.exit = time.monotonic() - began
    reader.join(timeout=10)
    if start.returncode:
        print("".join(log[-40:]), file=sys.stderr)  # what went wrong, as the trainer said
    return start


def summary(starts: list[Start], key: str) -> str:
    values = [v for s in starts if (v := getattr(s, key)) is not None]
    if not values:
        return "never"
    return f"{statistics.median(values):.2f} s (max {max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/trainer_startup")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifest = write_speech_manifest(root / "speech")
        model = args.model or build_tiny_whisper(root / "tiny-whisper")
        starts: list[Start] = []
        for repeat in range(args.repeats):
            for nproc in (1, 2):
                start = one_start(model, manifest, root / f"run-{nproc}-{repeat}", nproc)
                print(json.dumps(asdict(start)), flush=True)
                starts.append(start)

    rows = []
    for nproc in (1, 2):
        mine = [s for s in starts if s.nproc == nproc]
        rows.append(
            f"| {nproc} | {summary(mine, 'serving')} | {summary(mine, 'model_ready')} "
            f"| {summary(mine, 'first_evaluation')} | {sum(s.returncode == 0 for s in mine)}"
            f" / {len(mine)} |"
        )
    cores = os.cpu_count()
    table = "\n".join(
        [
            f"# trainer start-up: {args.model or 'tiny random Whisper'}, {cores} CPUs, "
            f"{args.repeats} starts each",
            "",
            "| processes | serving | model ready | first evaluation | exit 0 |",
            "|---|---|---|---|---|",
            *rows,
            "",
            "Seconds from spawning `marco-trainer train` (torchrun for 2) to each, median (max).",
        ]
    )
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(table + "\n")
    args.out.with_suffix(".json").write_text(
        json.dumps({"model": str(args.model), "starts": [asdict(s) for s in starts]}, indent=2)
    )


if __name__ == "__main__":
    main()
