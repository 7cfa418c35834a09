"""Running the trainer CLI from tests: as a subprocess, one process or under torchrun."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from tests.tools import checkout_env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def trainer_env() -> dict[str, str]:
    env = checkout_env()
    env["OMP_NUM_THREADS"] = "1"
    return env


def trainer_command(*args: str, nproc: int = 1) -> list[str]:
    """``marco-trainer ARGS`` as a subprocess; under torchrun when ``nproc`` > 1."""
    if nproc == 1:
        return [sys.executable, "-m", "marco_trainer", *args]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "marco_trainer",
        *args,
    ]


def run_trainer(*args: str, nproc: int = 1, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        trainer_command(*args, nproc=nproc),
        env=trainer_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def train_in_process(*args: str) -> int:
    """``marco-trainer ARGS`` in this process, where what a test checks is what the run
    computed, not how the process behaves: no torch import of its own (about 8 CPU-seconds
    a run). On one thread, as `trainer_env` gives a subprocess, so that its numbers are
    those of a subprocess run a test compares them with."""
    import torch

    from marco_trainer.cli import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main(list(args))
    finally:
        torch.set_num_threads(threads)


def read_history(output_dir: Path):
    from marco_contract.formats import EvaluationHistory

    return EvaluationHistory.model_validate_json(
        (Path(output_dir) / "evaluations.json").read_text()
    )


def read_trace(output_dir: Path, rank: int = 0) -> list[dict]:
    """Per-step lines a rank appends to OUTPUT_DIR/trace/rank-N.jsonl."""
    import json

    path = Path(output_dir) / "trace" / f"rank-{rank}.jsonl"
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    # A killed writer may leave a partial last line.
    return [json.loads(line) for line in lines if line.endswith("}")]


def train_args(model: Path, manifest: Path, output: Path, **flags) -> list[str]:
    """``train`` arguments for a tiny run; ``flags`` become ``--flag value`` (True: bare)."""
    args = [
        "train",
        "--model",
        str(model),
        "--train-manifest",
        str(manifest),
        "--validation-manifest",
        str(manifest),
        "--output-dir",
        str(output),
    ]
    defaults = {"metrics_port": 0, "per_device_batch_size": 1, "gradient_accumulation": 1}
    for key, value in {**defaults, **flags}.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            args.append(flag)
        elif value is not False and value is not None:
            args += [flag, str(value)]
    return args
