"""A torchrun worker killed mid-cycle: the elastic agent restarts both workers
(--max-restarts, as the train Job's command passes it) and they resume from
checkpoints/last, to the uninterrupted run's history. This is what a train node does
when one of its workers dies; a lost pod's replacement rejoins the same way.

Under the environment both drivers give torchrun (plan.TORCHRUN_ENV): without it torch
hands every restart round the same rendezvous store, whose keys the killed round left
(pytorch issue 135712), and the restarted round dialled dead ports or hung.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from marco_operator.api import ResourcesSpec
from marco_operator.plan import TORCHRUN_ENV
from tests.integration.trainer.test_trainer_resume import saved_step
from tests.trainer_runs import read_history, read_trace, run_trainer, train_args, trainer_env

pytestmark = pytest.mark.slow

FLAGS = dict(learning_rate=1e-2, max_steps=20, eval_every=5, max_new_tokens=6)
#: The spec's default, which the train Job passes to torchrun.
MAX_RESTARTS = ResourcesSpec.model_fields["max_restarts"].default


def torchrun(*args: str, max_restarts: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc-per-node=2", f"--max-restarts={max_restarts}",
            "-m", "marco_trainer", *args]  # fmt: skip


def worker_of_rank(agent: int, rank: int) -> int | None:
    """The pid of the agent's child whose environment says RANK=`rank`, if it runs yet."""
    children = Path(f"/proc/{agent}/task/{agent}/children").read_text().split()
    for pid in children:
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if f"RANK={rank}".encode() in env:
            return int(pid)
    return None


def test_a_killed_worker_is_restarted_and_the_run_resumes_from_its_last_checkpoint(
    tmp_path, tiny_whisper, speech_manifest
):
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    done = run_trainer(*train_args(tiny_whisper, speech_manifest, reference, **FLAGS), nproc=2)
    assert done.returncode == 0, done.stderr[-3000:]

    args = train_args(tiny_whisper, speech_manifest, resumed, **FLAGS)
    log = tmp_path / "agent.log"  # a file, not a pipe nobody reads while the run goes on
    with log.open("w") as sink:
        agent = subprocess.Popen(
            torchrun(*args, max_restarts=MAX_RESTARTS),
            env={**trainer_env(), **TORCHRUN_ENV},
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
        try:
            # Mid-cycle: after step 5's checkpoint, with rank 1 some steps past it.
            deadline = time.monotonic() + 180
            while not (saved_step(resumed) >= 5 and len(read_trace(resumed, 1)) >= 7):
                assert agent.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, "the run never reached step 7"
                time.sleep(0.005)
            victim = worker_of_rank(agent.pid, 1)
            assert victim is not None
            os.kill(victim, signal.SIGKILL)
            killed_at = saved_step(resumed)
            assert 5 <= killed_at < 20, "the kill must land mid-run"
            agent.wait(timeout=240)
        finally:
            if agent.poll() is None:
                agent.kill()
    stderr = log.read_text()
    assert agent.returncode == 0, stderr[-3000:]
    # The agent saw rank 1 killed and restarted the workers once: no round after it failed.
    assert "failed (exitcode: -9) local_rank: 1" in stderr, stderr[-3000:]
    assert stderr.count("failed (exitcode:") == 1, stderr[-3000:]
    # The new workers resumed from checkpoints/last, at the step saved before the kill or,
    # when the agent's SIGTERM to rank 0 landed between steps, at the one rank 0 saved then.
    checkpoint = resumed / "checkpoints" / "last"
    resumed_at = [
        int(m)
        for m in re.findall(rf"resumed from {re.escape(str(checkpoint))} at step (\d+)", stderr)
    ]
    assert resumed_at and all(killed_at <= step < 20 for step in resumed_at), stderr[-3000:]

    a, b = read_history(reference).evaluations, read_history(resumed).evaluations
    assert [e.step for e in a] == [e.step for e in b] == [5, 10, 15, 20]
    for x, y in zip(a, b, strict=True):
        assert y.loss == pytest.approx(x.loss, rel=1e-5)
        assert (y.wer, y.lr, y.cycle) == (x.wer, x.lr, x.cycle)
