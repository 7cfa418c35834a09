"""The trainer fails mid-run (issue 13's fault suite): `marco-trainer train` as a real
process on a tiny Whisper, steered by a stand-in operator that writes each cycle's directive
when the trainer has closed the cycle before, as `marco operator` does through the
ConfigMap. Faults: SIGKILL mid-cycle, the disk full while a checkpoint is written
(RLIMIT_FSIZE, set on the running process), a corrupt `last` checkpoint (and both versions
of it corrupt).

The stated outcome is the uninterrupted run's: the same evaluations (step, cycle, LR, WER,
loss), each once, after the resumed process starts from the last checkpoint that was whole.
"""

from __future__ import annotations

import json
import resource
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from marco_contract.formats import Directive
from tests.trainer_runs import (
    read_history,
    read_trace,
    train_args,
    train_in_process,
    trainer_command,
    trainer_env,
)

pytestmark = [pytest.mark.faults, pytest.mark.slow]

LRS = [1e-2, 5e-3, 2.5e-3]  # cycle 0 (the command line's), 1 and 2
FLAGS = dict(
    learning_rate=LRS[0],
    max_steps=30,
    eval_every=5,
    cycle_steps=10,
    per_device_batch_size=2,
    max_new_tokens=6,
    directive_timeout_seconds=120,
)
TIMEOUT = 240.0


def saved_step(output: Path) -> int:
    """The step of checkpoints/last, read from its file."""
    state = output / "checkpoints" / "last" / "trainer_state.json"
    try:
        return json.loads(state.read_text())["step"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


def evaluated(output: Path) -> list[int]:
    try:
        return [e.step for e in read_history(output).evaluations]
    except (FileNotFoundError, ValueError):
        return []


class StandInOperator:
    """Writes cycle c+1's directive once the trainer's evaluations close cycle c (step
    (c+1) x cycle_steps), up to `allowed` (None: every cycle): the trainer waits meanwhile."""

    def __init__(self, output: Path) -> None:
        self.output = output
        self.control = output.parent / f"{output.name}-directive.json"
        self.allowed: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stand-in-operator", daemon=True)
        self.write(0)

    def write(self, cycle: int) -> None:
        tmp = self.control.with_suffix(".tmp")
        tmp.write_text(Directive(cycle=cycle, learning_rate=LRS[cycle]).model_dump_json())
        tmp.replace(self.control)

    def cycle(self) -> int:
        return Directive.model_validate_json(self.control.read_text()).cycle

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            current = self.cycle()
            closed = (current + 1) * FLAGS["cycle_steps"] in evaluated(self.output)
            if (
                closed
                and current + 1 < len(LRS)
                and (self.allowed is None or current < self.allowed)
            ):
                self.write(current + 1)

    def __enter__(self) -> StandInOperator:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)


class Trainer:
    """One `marco-trainer train` process, its stderr in a file (a pipe left unread fills)."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        with log.open("w") as handle:
            self.process = subprocess.Popen(
                trainer_command(*args), env=trainer_env(), stdout=subprocess.DEVNULL, stderr=handle
            )

    def until(self, what: str, condition: Callable[[], object]) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not condition():
            assert self.process.poll() is None, f"exited before {what}: {self.stderr()[-3000:]}"
            assert time.monotonic() < deadline, f"no {what} after {TIMEOUT:.0f} s"
            time.sleep(0.005)

    def wait(self) -> int:
        try:
            return self.process.wait(timeout=TIMEOUT)
        finally:
            if self.process.poll() is None:
                self.process.kill()

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")


def args_for(model: Path, manifest: Path, output: Path, operator: StandInOperator) -> list[str]:
    return train_args(model, manifest, output, control_file=operator.control, **FLAGS)


def run_to_the_end(args: list[str], log: Path) -> str:
    trainer = Trainer(args, log)
    code = trainer.wait()
    assert code == 0, trainer.stderr()[-3000:]
    return trainer.stderr()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_whisper, speech_manifest) -> Path:
    """The uninterrupted run: in this process, as nothing interrupts it (the operator's
    directives come from its thread all the same)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    with StandInOperator(out) as operator:
        assert train_in_process(*args_for(tiny_whisper, speech_manifest, out, operator)) == 0
    return out


def assert_same_history(reference: Path, resumed: Path) -> None:
    a, b = read_history(reference).evaluations, read_history(resumed).evaluations
    assert [e.step for e in a] == [e.step for e in b] == list(range(5, 31, 5))
    # Each cycle at its directive's LR: cycle c from step 10c + 1 (its evaluations 10c + 5, + 10).
    assert [(e.cycle, e.lr) for e in b] == [(c, LRS[c]) for c in (0, 0, 1, 1, 2, 2)]
    for x, y in zip(a, b, strict=True):
        assert y.loss == pytest.approx(x.loss, rel=1e-5)
        assert y.wer == x.wer
    ref = json.loads((reference / "result.json").read_text())
    res = json.loads((resumed / "result.json").read_text())
    assert (res["wer"], res["best_step"], res["steps"]) == (ref["wer"], ref["best_step"], 30)


@pytest.fixture()
def run_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "run"


@pytest.fixture(scope="module")
def killed_in_cycle_1(tmp_path_factory, tiny_whisper, speech_manifest) -> Path:
    """A run SIGKILLed in cycle 1, past step 15's checkpoint (cycle 2's directive withheld,
    so the kill lands there), killed once for the tests that resume from it, each from a
    copy of its folder (a trainer process each: the kill is the same every time)."""
    run_dir = tmp_path_factory.mktemp("killed") / "run"
    with StandInOperator(run_dir) as operator:
        operator.allowed = 1  # cycle 2 waits: the kill lands in cycle 1
        args = args_for(tiny_whisper, speech_manifest, run_dir, operator)
        first = Trainer(args, run_dir.parent / "first.log")
        first.until("step 16", lambda: (t := read_trace(run_dir)) and t[-1]["step"] >= 16)
        first.process.send_signal(signal.SIGKILL)
        assert first.wait() == -signal.SIGKILL
    return run_dir


def copy_killed_run(killed: Path, run_dir: Path) -> StandInOperator:
    """`killed` copied to `run_dir`, and its operator, at the directive the killed run had
    (cycle 1's), to let the resumed run go on (a context manager: enter it)."""
    shutil.copytree(killed, run_dir, symlinks=True)
    operator = StandInOperator(run_dir)
    operator.write(1)
    return operator


def test_a_trainer_killed_mid_cycle_resumes_from_its_last_checkpoint(
    run_dir, killed_in_cycle_1, reference, tiny_whisper, speech_manifest
):
    with copy_killed_run(killed_in_cycle_1, run_dir) as operator:
        killed_at = saved_step(run_dir)
        assert killed_at == 15, "the kill must land in cycle 1, after its first checkpoint"
        assert read_trace(run_dir)[-1]["step"] > killed_at  # steps past it were lost
        assert not (run_dir / "result.json").exists()

        args = args_for(tiny_whisper, speech_manifest, run_dir, operator)
        stderr = run_to_the_end(args, run_dir.parent / "second.log")
    assert f"resumed from {run_dir / 'checkpoints' / 'last'} at step 15" in stderr
    assert_same_history(reference, run_dir)


def test_a_full_disk_while_checkpointing_keeps_the_last_whole_checkpoint(
    run_dir, reference, tiny_whisper, speech_manifest
):
    """The file size limit drops under the model's size while the trainer waits at cycle 0's
    boundary: step 15's checkpoint cannot be written. It dies saying so; `last` is step 10's
    and whole; once the disk has room the stage resumes there."""
    with StandInOperator(run_dir) as operator:
        operator.allowed = 0
        args = args_for(tiny_whisper, speech_manifest, run_dir, operator)
        first = Trainer(args, run_dir.parent / "first.log")
        first.until("cycle 0 closed", lambda: 10 in evaluated(run_dir))
        model = run_dir / "checkpoints" / "last" / "model.safetensors"
        limit = model.stat().st_size // 2  # the trace, logs and JSON files stay far below it
        resource.prlimit(first.process.pid, resource.RLIMIT_FSIZE, (limit, limit))
        operator.allowed = 1
        code = first.wait()
        assert code == 1, first.stderr()[-3000:]
        assert "File too large" in first.stderr()
        assert saved_step(run_dir) == 10
        assert evaluated(run_dir) == [5, 10]
        from safetensors.torch import load_file

        assert load_file(model)  # whole: the half-written one never replaced it

        operator.allowed = None
        stderr = run_to_the_end(args, run_dir.parent / "second.log")
    assert f"resumed from {run_dir / 'checkpoints' / 'last'} at step 10" in stderr
    assert_same_history(reference, run_dir)


CORRUPTIONS = {
    "model.safetensors": ("the model's weights", lambda data: data[: len(data) // 3]),
    "optimizer.pt": ("optimizer.pt", lambda data: b"\x00" * 64 + data[64:]),
    "trainer_state.json": ("trainer_state.json", lambda data: data[: len(data) // 2]),
}


def corrupt(folder: Path, name: str) -> dict[Path, bytes]:
    """Corrupts `name` in `folder`; the folder's files as they are then."""
    (folder / name).write_bytes(CORRUPTIONS[name][1]((folder / name).read_bytes()))
    return files_of(folder)


def files_of(folder: Path) -> dict[Path, bytes]:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def moved_aside(checkpoints: Path, stem: str) -> Path:
    (moved,) = checkpoints.glob(f"{stem}.corrupt-*")
    return moved


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_a_corrupt_last_checkpoint_is_moved_aside_and_its_previous_version_resumes(
    run_dir, killed_in_cycle_1, reference, tiny_whisper, speech_manifest, name
):
    """Killed in cycle 1 after step 15's checkpoint (as above), `last` (step 15) then
    corrupted: the rerun moves it aside whole, says so, resumes from the previous `last`
    (step 10, cycle 0's end) and ends with the uninterrupted run's history, each evaluation
    once; the result counts the corrupt checkpoint."""
    checkpoints = run_dir / "checkpoints"
    with copy_killed_run(killed_in_cycle_1, run_dir) as operator:
        assert saved_step(run_dir) == 15
        previous = checkpoints / ".last.old"
        assert json.loads((previous / "trainer_state.json").read_text())["step"] == 10
        corrupted = corrupt(checkpoints / "last", name)

        args = args_for(tiny_whisper, speech_manifest, run_dir, operator)
        stderr = run_to_the_end(args, run_dir.parent / "second.log")
    moved = moved_aside(checkpoints, "last")
    assert files_of(moved) == corrupted  # nothing lost: the user can inspect it
    what = CORRUPTIONS[name][0]
    last = checkpoints / "last"
    assert f"cannot resume from {last}: {what} is unreadable" in stderr
    assert f"moved it to {moved}" in stderr
    assert f"resumed from {previous} at step 10" in stderr
    assert_same_history(reference, run_dir)
    result = json.loads((run_dir / "result.json").read_text())
    assert result["counts"]["corrupt_checkpoints"] == 1


def test_with_both_versions_of_last_corrupt_the_stage_trains_again_from_step_0(
    run_dir, tiny_whisper, speech_manifest
):
    """`last` and its previous version both unreadable (a double fault): both moved aside, the
    old run's best and evaluations.json kept aside, and the stage trained again from step 0 to
    the history of the first run, which had started from step 0 too (no directive here). The
    previous version fails after its weights, moments and RNG were read: a fresh run's come
    back."""
    short = dict(FLAGS, max_steps=10)
    args = train_args(tiny_whisper, speech_manifest, run_dir, **short)  # no directive
    assert train_in_process(*args) == 0  # the first run's outcome only: in this process
    expected = read_history(run_dir).evaluations
    checkpoints = run_dir / "checkpoints"
    best = files_of(checkpoints / "best")
    history = (run_dir / "evaluations.json").read_bytes()
    last = corrupt(checkpoints / "last", "model.safetensors")
    previous = corrupt(checkpoints / ".last.old", "trainer_state.json")

    stderr = run_to_the_end(args, run_dir.parent / "second.log")
    assert files_of(moved_aside(checkpoints, "last")) == last
    assert files_of(moved_aside(checkpoints, "last.old")) == previous
    (best_aside,) = checkpoints.glob("best.before-*")
    assert files_of(best_aside) == best
    (history_aside,) = run_dir.glob("evaluations.json.before-*")
    assert history_aside.read_bytes() == history
    assert "training this stage again from step 0" in stderr
    again = read_history(run_dir).evaluations
    assert [e.step for e in again] == [e.step for e in expected] == [5, 10]
    for x, y in zip(expected, again, strict=True):
        assert y.loss == pytest.approx(x.loss, rel=1e-5)
        assert (y.wer, y.lr, y.cycle) == (x.wer, x.lr, x.cycle)
    result = json.loads((run_dir / "result.json").read_text())
    assert result["counts"]["corrupt_checkpoints"] == 2
