"""Interrupted runs resume to the uninterrupted run's history.

SIGKILL (a lost node) resumes from the last evaluation's checkpoint; SIGTERM
(a suspended Job) saves the state at the current step and exits 143.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from tests.trainer_runs import (
    read_history,
    read_trace,
    run_trainer,
    train_args,
    train_in_process,
    trainer_command,
    trainer_env,
)

pytestmark = pytest.mark.slow

FLAGS = dict(
    learning_rate=1e-2, max_steps=40, eval_every=5, per_device_batch_size=2, max_new_tokens=6
)


def saved_step(output) -> int:
    state = output / "checkpoints" / "last" / "trainer_state.json"
    try:
        return json.loads(state.read_text())["step"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_whisper, speech_manifest):
    """The uninterrupted run: in this process, as nothing interrupts it."""
    out = tmp_path_factory.mktemp("reference")
    assert train_in_process(*train_args(tiny_whisper, speech_manifest, out, **FLAGS)) == 0
    return out


def interrupt(args, until, sig) -> subprocess.Popen:
    process = subprocess.Popen(
        trainer_command(*args), env=trainer_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 120
        while not until() and time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read()[-3000:]
            time.sleep(0.005)
        process.send_signal(sig)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    return process


def assert_same_history(reference, resumed):
    a, b = read_history(reference).evaluations, read_history(resumed).evaluations
    assert [e.step for e in a] == [e.step for e in b] == list(range(5, 41, 5))
    for x, y in zip(a, b, strict=True):
        assert y.loss == pytest.approx(x.loss, rel=1e-5)
        assert (y.wer, y.lr, y.cycle) == (x.wer, x.lr, x.cycle)
    assert a[-1].loss < a[0].loss
    ref = json.loads((reference / "result.json").read_text())
    res = json.loads((resumed / "result.json").read_text())
    assert (res["wer"], res["best_step"], res["steps"]) == (ref["wer"], ref["best_step"], 40)


def test_killed_run_resumes_to_the_same_history(tmp_path, reference, tiny_whisper, speech_manifest):
    resumed = tmp_path / "resumed"
    args = train_args(tiny_whisper, speech_manifest, resumed, **FLAGS)
    interrupt(args, lambda: saved_step(resumed) >= 10, signal.SIGKILL)
    killed_at = saved_step(resumed)
    assert 10 <= killed_at < 40, "the kill must land mid-run"
    assert not (resumed / "result.json").exists()

    again = run_trainer(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resumed from {resumed / 'checkpoints' / 'last'} at step {killed_at}" in again.stderr
    assert_same_history(reference, resumed)


def test_sigterm_saves_the_current_step_and_resumes(
    tmp_path, reference, tiny_whisper, speech_manifest
):
    resumed = tmp_path / "resumed"
    args = train_args(tiny_whisper, speech_manifest, resumed, **FLAGS)
    # Between evaluations, so the saved state carries a partial loss average.
    process = interrupt(
        args, lambda: len(read_trace(resumed)) >= 7 and len(read_trace(resumed)) % 5, signal.SIGTERM
    )
    assert process.returncode == 143
    stopped_at = saved_step(resumed)
    assert stopped_at == read_trace(resumed)[-1]["step"] < 40
    assert not (resumed / "result.json").exists()

    again = run_trainer(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"at step {stopped_at}" in again.stderr
    assert_same_history(reference, resumed)
