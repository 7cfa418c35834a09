"""`marco run` owns its stage processes (issue 13): the real driver, in a process of
its own, with its stages played by tests/marco_run_fakes.py.

Each test waits for what it can observe (a file a stage writes, the status, the
driver's exit), never for a fixed time.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import yaml

from marco_contract.status import AsrAdaptationStatus
from tests.marco_run_fakes import CONTROL_ENV
from tests.tools import ROOT, checkout_env
from tests.trainer_runs import free_port

T = TypeVar("T")
TIMEOUT = 120.0


def wait_for(condition: Callable[[], T], what: str, timeout: float = TIMEOUT) -> T:
    """The first true value of `condition`, looked at every 20 ms."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {timeout:.0f} s")
        time.sleep(0.02)
    return value


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return text[text.rindex(")") + 2 :].split()


def alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def group(pgid: int) -> list[int]:
    """The live processes of a process group."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
                found.append(int(entry.name))
    return sorted(found)


class FakeRun:
    """One run directory, driven by `marco run` with fake stages (filter, then train)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.control = tmp_path / "control"
        self.control.mkdir()
        self.manifest = tmp_path / "fake.yaml"
        self.manifest.write_text(yaml.safe_dump(_manifest()))
        self.out = tmp_path / "out"
        self.run_dir = (self.out / "marco-asr" / "fake").resolve()
        self.port = free_port()
        self.logs: list[Path] = []
        self.drivers: list[subprocess.Popen] = []

    def argv(self, *extra: str) -> list[str]:
        return [sys.executable, "-m", "tests.marco_run_fakes", "driver",
                "-f", str(self.manifest), "--data-dir", str(self.tmp),
                "--output-dir", str(self.out), "--interval", "0.1",
                "--metrics-port", str(self.port), *extra]  # fmt: skip

    def env(self) -> dict[str, str]:
        # ROOT too: the stages are `python -m tests.marco_run_fakes stage`.
        return {**checkout_env(ROOT), CONTROL_ENV: str(self.control)}

    def start(self, *extra: str) -> subprocess.Popen:
        """A driver in the background; its output goes to a file (`output`)."""
        log = self.tmp / f"driver-{len(self.logs)}.log"
        self.logs.append(log)
        with log.open("w") as handle:
            driver = subprocess.Popen(
                self.argv(*extra), cwd=ROOT, env=self.env(), stdout=handle, stderr=handle
            )
        self.drivers.append(driver)
        return driver

    def run(self, *extra: str) -> tuple[int, str]:
        """A driver to its end: its exit status and output."""
        driver = self.start(*extra)
        code = driver.wait(timeout=TIMEOUT)
        return code, self.logs[-1].read_text()

    def output(self) -> str:
        return "".join(f"--- {log.name}\n{log.read_text()}" for log in self.logs)

    def go(self, stage: str) -> None:
        (self.control / f"{stage}.go").touch()

    def _pids(self, name: str) -> list[int]:
        path = self.control / name
        return [int(line) for line in path.read_text().split()] if path.exists() else []

    def starts(self, stage: str) -> list[int]:
        return self._pids(f"{stage}.starts")

    def terminated(self, stage: str) -> list[int]:
        return self._pids(f"{stage}.terminated")

    def child(self, stage: str) -> int | None:
        pids = self._pids(f"{stage}.child")
        return pids[0] if pids else None

    def status(self) -> AsrAdaptationStatus:
        path = self.run_dir / "status.json"
        return AsrAdaptationStatus.model_validate_json(path.read_text() if path.exists() else "{}")

    def stage_state(self, stage: str) -> str | None:
        record = self.status().stages.get(stage)
        return record.state if record is not None else None

    def events(self) -> list[dict]:
        path = self.run_dir / "events.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()]


def _manifest() -> dict:
    return {
        "apiVersion": "asr.marco.dev/v1alpha1",
        "kind": "AsrAdaptation",
        "metadata": {"name": "fake"},
        "spec": {
            "model": {"source": "/data/model", "family": "encoder-decoder"},
            "data": {"train": ["train.jsonl"], "validation": "dev.jsonl"},
            "profile": {"enabled": False},
            "augmentation": {"enabled": False},
            "baseline": {"enabled": False},
            "evaluation": {"enabled": False},
            "training": {"initialLearningRate": 1e-5, "maxSteps": 4},
            "resources": {"gpusPerNode": 0},
        },
    }


@pytest.fixture()
def fake(tmp_path: Path) -> Iterator[FakeRun]:
    run = FakeRun(tmp_path)
    yield run
    # What a test that failed halfway left running: drivers stop, stages finish.
    for driver in run.drivers:
        if driver.poll() is None:
            driver.terminate()
            driver.wait(timeout=TIMEOUT)
    for stage in ("filter", "train"):
        run.go(stage)


@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)]
)
def test_a_stop_signal_stops_every_process_of_the_stage_and_saves_the_status(fake, signum, code):
    driver = fake.start()
    child = wait_for(lambda: fake.child("filter"), "filter stage handling SIGTERM")
    (stage,) = fake.starts("filter")
    assert group(stage) == sorted([stage, child])  # the stage's own group: it and its child

    driver.send_signal(signum)

    assert driver.wait(timeout=TIMEOUT) == code, fake.output()
    assert fake.terminated("filter") == [stage]  # SIGTERM: the trainer saves its state there
    assert group(stage) == []
    assert not alive(child)
    assert fake.stage_state("filter") == "Running"  # saved: the rerun starts it again
    assert not (fake.run_dir / "processes.json").exists()
    assert f"interrupted ({signal.Signals(signum).name})" in fake.output()


def test_a_rerun_after_the_driver_was_killed_stops_the_orphan_and_resumes(fake):
    fake.go("filter")
    first = fake.start()
    wait_for(lambda: fake.child("train"), "train stage handling SIGTERM")
    wait_for(lambda: fake.stage_state("train") == "Running", "train Running in the status")
    (orphan,) = fake.starts("train")
    first.kill()
    first.wait(timeout=TIMEOUT)
    assert alive(orphan)  # nothing stops it now: this is the orphan the rerun finds

    second = fake.start()
    wait_for(lambda: len(fake.starts("train")) == 2, "second train process", timeout=TIMEOUT)
    # The orphan got SIGTERM (it saved its state) and was gone before the stage started
    # again: the new process took the stage directory's flock, which the orphan held.
    assert fake.terminated("train") == [orphan]
    assert not alive(orphan)
    fake.go("train")

    assert second.wait(timeout=TIMEOUT) == 0, fake.output()
    status = fake.status()
    assert status.phase == "Succeeded", status.message
    assert (status.stages["filter"].state, status.stages["train"].state) == ("Succeeded",) * 2
    assert len(fake.starts("filter")) == 1  # the finished stage was not run again
    stopped = [e for e in fake.events() if e["reason"] == "OrphanStopped"]
    assert len(stopped) == 1 and f"fake-train (PID {orphan})" in stopped[0]["message"]
    assert f"stopping fake-train (PID {orphan})" in fake.output()
    assert "busy" not in (fake.run_dir / "logs" / "train.log").read_text()
    assert not (fake.run_dir / "processes.json").exists()


def test_a_second_marco_run_of_the_same_directory_is_refused_at_once(fake):
    first = fake.start()
    wait_for(lambda: fake.child("filter"), "filter stage")

    code, output = fake.run()

    assert code == 3, output
    assert f"{fake.run_dir} is in use by another `marco run` (PID {first.pid})" in output
    assert first.poll() is None and len(fake.starts("filter")) == 1  # untouched
    fake.go("filter")
    fake.go("train")
    assert first.wait(timeout=TIMEOUT) == 0, fake.output()
    assert fake.status().phase == "Succeeded"


def test_a_failed_run_stays_failed_until_retried_then_resumes_at_the_failed_stage(fake):
    fake.go("filter")
    fake.go("train")
    (fake.control / "train.fail").touch()
    code, output = fake.run()
    assert code == 1, output
    status = fake.status()
    assert (status.phase, status.stages["train"].state) == ("Failed", "Failed")
    assert "train: failed as told" in (status.message or "")
    assert "--retry" in output
    # status.json has the cluster's conditions, from the same derivation.
    failed = {c.type: (c.status, c.reason) for c in status.conditions}
    assert failed == {"Ready": ("False", "StageFailed"), "Running": ("False", "Failed"),
                      "Succeeded": ("False", "StageFailed"), "Failed": ("True", "StageFailed"),
                      "Queued": ("False", "Failed")}  # fmt: skip

    code, output = fake.run()  # a plain rerun shows the result: it does not start over
    assert code == 1, output
    assert fake.status().phase == "Failed" and len(fake.starts("train")) == 1

    (fake.control / "train.fail").unlink()
    code, output = fake.run("--retry")

    assert code == 0, fake.output()
    status = fake.status()
    assert status.phase == "Succeeded", status.message
    assert status.stages["train"].state == "Succeeded"
    assert len(fake.starts("filter")) == 1 and len(fake.starts("train")) == 2
    done = {c.type: (c.status, c.reason) for c in status.conditions}
    assert (done["Succeeded"], done["Failed"]) == (("True", "Succeeded"), ("False", "Succeeded"))
    assert {c.observed_generation for c in status.conditions} == {status.observed_generation}
    assert "retrying train after: train Job fake-train failed" in output
    assert [e["reason"] for e in fake.events()].count("Retrying") == 1


# --- spec edits of a started run (issue 13: refused, or applied and said) --------------------


def _edit(fake: FakeRun, **sections: dict) -> None:
    """Rewrite the manifest with these spec sections merged in (one level deep)."""
    manifest = yaml.safe_load(fake.manifest.read_text())
    for section, fields in sections.items():
        manifest["spec"][section] = {**manifest["spec"].get(section, {}), **fields}
    fake.manifest.write_text(yaml.safe_dump(manifest))


def _stopped_in_filter(fake: FakeRun) -> None:
    """A run started (its filter stage running), then stopped with SIGTERM."""
    driver = fake.start()
    wait_for(lambda: fake.child("filter"), "filter stage handling SIGTERM")
    driver.send_signal(signal.SIGTERM)
    assert driver.wait(timeout=TIMEOUT) == 143, fake.output()
    status = fake.status()
    assert (status.started_generation, status.observed_generation) == (1, 1)


def test_a_frozen_edit_of_a_started_run_is_refused_before_anything_runs(fake):
    _stopped_in_filter(fake)
    status_before = (fake.run_dir / "status.json").read_bytes()
    events_before = (fake.run_dir / "events.jsonl").read_bytes()
    original = fake.manifest.read_text()
    # Two fields a cluster refuses once the run started, and one it takes (resources.cpu).
    _edit(fake, training={"maxSteps": 8}, data={"validation": "other.jsonl"},
          resources={"cpu": "3"})  # fmt: skip

    code, output = fake.run()

    assert code == 2, output
    changed = output.split("changed: ", 1)[1].split(". ", 1)[0]
    assert sorted(changed.split(", ")) == ["spec.data", "spec.training"], output
    assert "Revert those fields" in output and "--output-dir" in output
    assert str(fake.run_dir / "spec.json") in output
    # Nothing ran, nothing was written: no stage started, the status and Events as they were.
    assert len(fake.starts("filter")) == 1
    assert (fake.run_dir / "status.json").read_bytes() == status_before
    assert (fake.run_dir / "events.jsonl").read_bytes() == events_before

    fake.manifest.write_text(original)  # reverted: the run resumes, same generation
    fake.go("filter")
    fake.go("train")
    code, output = fake.run()
    assert code == 0, fake.output()
    status = fake.status()
    assert status.phase == "Succeeded", status.message
    assert (status.started_generation, status.observed_generation) == (1, 1)
    assert len(fake.starts("filter")) == 2
    assert [e for e in fake.events() if e["reason"] == "SpecChanged"] == []


def test_an_allowed_edit_of_a_started_run_applies_as_a_new_generation(fake):
    _stopped_in_filter(fake)
    # Fields a cluster takes after the start; the filter's deadline also applies locally.
    _edit(fake, resources={"cpu": "3", "stageDeadlineSeconds": {"filter": 1}})

    code, output = fake.run()  # the filter waits for a go-file it never gets: 1 s, then stopped

    assert code == 1, output
    status = fake.status()
    assert status.phase == "Failed"
    assert "DeadlineExceeded" in (status.message or "")
    assert "spec.resources.stageDeadlineSeconds.filter, is 1 s" in (status.message or "")
    assert (status.started_generation, status.observed_generation) == (1, 2)
    (changed,) = [e for e in fake.events() if e["reason"] == "SpecChanged"]
    assert changed["type"] == "Normal"
    assert changed["message"] == (
        "spec edited (generation 2): spec.resources.cpu, spec.resources.stageDeadlineSeconds; "
        "applies to the stages started from now on"
    )
    assert changed["message"] in output
    saved = json.loads((fake.run_dir / "spec.json").read_text())
    assert saved["generation"] == 2
    assert saved["spec"]["resources"]["stageDeadlineSeconds"] == {"filter": 1}

    code, output = fake.run()  # the same manifest again: the same generation, nothing said
    assert code == 1, output
    assert fake.status().observed_generation == 2
    assert len([e for e in fake.events() if e["reason"] == "SpecChanged"]) == 1


# --- a stop the trainer ignores (issue 14: enforced by deleting the "Job") ------------------


def test_a_stop_the_train_stage_ignores_stops_its_process_and_the_run_evaluates(fake):
    """The same core path as a cluster's: past the grace period the train process (its whole
    session) is stopped, train counts as Succeeded with the stop said enforced, and evaluate
    runs (it exports the best checkpoint the trainer did not): the run ends Succeeded."""
    from marco_contract.formats import Directive, Evaluation, EvaluationHistory

    _edit(
        fake,
        data={"test": "test.jsonl"},
        evaluation={"enabled": True},
        training={"maxSteps": 1000, "evalEvery": 1, "cycleSteps": 1000,
                  "earlyStopping": {"patience": 2, "minImprovement": 0.1},
                  "stopGracePeriodSeconds": 0},
    )  # fmt: skip
    fake.go("filter")
    driver = fake.start()
    train = wait_for(lambda: fake.child("train"), "the train stage handling SIGTERM")
    control = fake.run_dir / "control" / "directive.json"
    directive = Directive.model_validate_json(control.read_text())
    # What rank 0 writes for the driver to read: a plateau (30.0 at step 1, then two
    # evaluations without a 0.1-point gain; the lowest, 29.95 at step 3, is the best),
    # under the directive in force. The fake stage ignores the stop.
    plateau = [
        Evaluation(step=step, cycle=0, lr=directive.learning_rate, wer=wer, time=time.time())
        for step, wer in ((1, 30.0), (2, 30.05), (3, 29.95))
    ]
    history = EvaluationHistory(adaptation="fake", evaluations=plateau)
    (fake.run_dir / "train" / "evaluations.json").write_text(history.model_dump_json())

    wait_for(lambda: fake.terminated("train"), "the train process stopped")
    wait_for(lambda: not alive(train), "the train stage's child gone with its session")
    wait_for(lambda: fake.starts("evaluate"), "the evaluate stage started")
    train_record = fake.status().stages["train"]
    assert train_record.state == "Succeeded", fake.output()
    assert "stop enforced" in (train_record.message or "")
    fake.go("evaluate")
    assert driver.wait(timeout=TIMEOUT) == 0, fake.output()
    status = fake.status()
    assert status.phase == "Succeeded" and status.final_wer == 10.0  # the fake's WER
    assert status.stop is not None and (status.best_wer, status.best_step) == (29.95, 3)
    warnings = [e for e in fake.events() if e["reason"] == "StopNotHonoured"]
    assert [e["type"] for e in warnings] == ["Warning"]
    assert len(fake.starts("train")) == 1  # stopped, not started again
