"""`marco run -f FILE.yaml`: the embedded default, one machine and no cluster.

The same `core.reconcile` that the kopf driver calls decides everything; this
driver only plays the cluster: each stage "Job" is a local subprocess of the
trainer CLI, the control ConfigMap is a plain file, the CR status is
`status.json`, Events go to the terminal and `events.jsonl`. The spec's data
volume maps to `--data-dir`, its output to `--output-dir`.

The LR trials run one after another: core starts every trial's "Job" at once,
as a cluster runs them side by side, and this driver queues all but one (a
queued trial is a Job not yet running), since one machine has one accelerator.

Ctrl-C, SIGTERM and SIGHUP stop the stage processes and save the status;
running the same command again resumes (finished stages are remembered, the
trainer resumes from its last checkpoint). A run that ended Failed resumes
from the stage that failed when run again with `--retry`.

The driver owns what it starts: it holds a lock on the run directory while it
lives (a second driver of the same directory is refused), and records every
stage process there (local_processes.py), so that a driver that died without
stopping them (SIGKILL, a crash) is followed by one that stops them first.

A run keeps the spec it is on (`spec.json`, with its generation). Rerun with an
edited manifest, a started run takes the edits a cluster takes
(api.MUTABLE_AFTER_START), as a new generation, and refuses the rest before
anything runs, as the CRD's transition rule does.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import yaml
from pydantic import ValidationError

from marco_contract.files import atomic_write_text
from marco_contract.formats import Directive, EvaluationHistory
from marco_contract.layout import Layout, output_path
from marco_contract.results import read_stage_result
from marco_operator import local_processes
from marco_operator.api import (
    API_VERSION,
    KIND,
    MUTABLE_AFTER_START,
    describe_error,
    frozen_changes,
    name_problem,
    parse_spec,
    spec_changes,
)
from marco_operator.core import (
    DEADLINE_EXCEEDED,
    NO_QUEUES,
    RETRY_CAP,
    RETRY_FIRST,
    Event,
    JobState,
    Observed,
    Outcome,
    StageStart,
    describe_exception,
    failed_pass,
    reconcile,
    retry_delay,
    retry_failed,
    settled,
)
from marco_operator.local_processes import ChildRecord, ChildrenLeft
from marco_operator.plan import ONLINE_STAGES, TOKEN_ENV, StageCommand
from marco_operator.rank0 import evaluations_url, fetch_evaluations

STOP_TIMEOUT = 20.0
LOOPBACK = "127.0.0.1"
RANK0_TIMEOUT = 2.0
#: In the run directory: the driver's lock (holding its PID), and its stage processes.
LOCK_FILE = "run.lock"
PROCESSES_FILE = "processes.json"
#: In the run directory: the spec the run is on, as given, and its generation.
SPEC_FILE = "spec.json"
#: What stops `marco run` the way Ctrl-C does.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(BaseException):
    """Ctrl-C, SIGTERM or SIGHUP reached the driver.

    A BaseException, as KeyboardInterrupt is: no `except Exception` takes it for
    an error of the step it interrupts.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for Ctrl-C, 143 for SIGTERM


class SpecFrozen(ValueError):
    """A started run rerun with an edit the cluster refuses after the start (the CRD's
    transition rule; api.frozen_changes), or whose saved spec cannot be read."""


class RunBusy(Exception):
    """Another `marco run` holds the run directory's lock."""

    def __init__(self, root: Path, holder: str) -> None:
        who = f"PID {holder}" if holder else "PID not written yet"
        super().__init__(
            f"{root} is in use by another `marco run` ({who}); wait for it to end, "
            "or stop it, and run again to resume"
        )
        self.root = root
        self.holder = holder


@dataclass
class LocalJob:
    """A stage process standing in for a Job, under the Job's name (names.job_name)."""

    start: StageStart
    log_path: Path
    process: subprocess.Popen | None = None  # None: queued, not started yet
    suspended: bool = False
    record: ChildRecord | None = None  # its identity, as recorded in processes.json
    spawned_at: float | None = None  # time.monotonic() when its process started
    expired: bool = False  # stopped for running past its deadline

    def state(self, output_dir: Path) -> JobState:
        name, stage, trial = self.start.job_name, self.start.stage, self.start.command.trial
        if self.suspended:
            return JobState(name=name, stage=stage, trial=trial, suspended=True)
        if not self.expired and self.past_deadline():
            _terminate(self)  # as the Job controller stops a Job's pods past its deadline
            self.expired = True
        if self.expired:
            return JobState(
                name=name,
                stage=stage,
                trial=trial,
                failed=True,
                failure_reason=f"{DEADLINE_EXCEEDED}: ran longer than its deadline, stopped "
                f"(log: {self.log_path})",
            )
        code = self.process.poll() if self.process is not None else None
        if code is None:
            active = 1 if self.process is not None else 0
            return JobState(name=name, stage=stage, trial=trial, active=active)
        if code == 0:
            return JobState(
                name=name,
                stage=stage,
                trial=trial,
                complete=True,
                result=read_stage_result(output_dir),
            )
        return JobState(
            name=name,
            stage=stage,
            trial=trial,
            failed=True,
            failure_reason=f"exit code {code}: {_last_line(self.log_path)} (log: {self.log_path})",
        )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def past_deadline(self) -> bool:
        deadline = self.start.deadline_seconds
        if deadline is None or self.spawned_at is None or not self.running:
            return False
        return time.monotonic() - self.spawned_at > deadline


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1][-300:] if lines else "no output"


@dataclass
class LocalRun:
    manifest: dict[str, Any]
    data_dir: Path
    output_dir: Path
    metrics_port: int = 9400
    nproc_per_node: int = 1
    jobs: dict[str, LocalJob] = field(default_factory=dict)  # by job name
    _deferring: bool = field(default=False, init=False, repr=False)
    _pending_signal: int | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        """Refuses (ValueError) what the API server would, before anything is written:
        the name, then the spec, then an output directory that resolves outside
        --output-dir (a symlink on the way)."""
        meta = self.manifest.setdefault("metadata", {})
        if "name" not in meta:
            raise ValueError("metadata.name: required")
        name = meta["name"]
        problem = name_problem(name) if isinstance(name, str) else "metadata.name: not a string"
        if problem:
            raise ValueError(problem)
        try:
            spec = parse_spec(dict(self.manifest.get("spec") or {}))
        except ValidationError as error:
            raise ValueError(describe_error(error)) from error
        meta.setdefault("namespace", "local")
        # A stable uid: the same manifest resumes the same run.
        meta.setdefault("uid", str(uuid.uuid5(uuid.NAMESPACE_URL, f"marco-asr/{name}")))
        meta.setdefault("generation", 1)
        out = output_path(spec.output.path, name)
        output_dir = self.output_dir.resolve()
        self.root = (output_dir / out).resolve()
        if self.root == output_dir or not self.root.is_relative_to(output_dir):
            raise ValueError(
                f"spec.output.path: {out!r} resolves to {self.root}, "
                f"not a folder inside --output-dir {output_dir}"
            )
        self.layout = Layout(
            data_mount=spec.data.mount_path,
            data_root=str(self.data_dir.resolve()),
            output_root=str(self.root),
            control_file=str(self.root / "control" / "directive.json"),
            metrics_port=self.metrics_port,
        )
        self.status_path = Path(self.layout.run.status_file)
        self.events_path = Path(self.layout.run.events_file)
        self.logs = self.root / "logs"
        self.lock_path = self.root / LOCK_FILE
        self.processes_path = self.root / PROCESSES_FILE
        self.spec_path = self.root / SPEC_FILE

    # ----------------------------------------------------------------- state I/O

    def load_status(self) -> dict[str, Any]:
        if not self.status_path.exists():
            return {}
        return json.loads(self.status_path.read_text())

    def save_status(self, status: dict[str, Any]) -> None:
        atomic_write_text(self.status_path, json.dumps(status, indent=2) + "\n")

    def read_directive(self) -> Directive | None:
        path = Path(self.layout.control_file)
        if not path.exists():
            return None
        return Directive.model_validate_json(path.read_text())

    def write_directive(self, directive: Directive) -> None:
        atomic_write_text(self.layout.control_file, directive.model_dump_json())

    def fetch_evaluations(self) -> EvaluationHistory | None:
        history = fetch_evaluations(evaluations_url(LOOPBACK, self.metrics_port), RANK0_TIMEOUT)
        if history is not None:
            return history
        # Not up yet, or between restarts: the trainer's file is the next best source.
        path = Path(self.layout.run.evaluations_file)
        if path.exists():
            try:
                return EvaluationHistory.model_validate_json(path.read_text())
            except ValidationError:
                return None
        return None

    # ----------------------------------------------------------------- ownership

    @contextmanager
    def owned(self, say: Callable[[str], object] | None = None) -> Iterator[None]:
        """Hold the run directory and its stage processes for the driver's life.

        Takes the directory's lock (RunBusy when another driver holds it), takes the
        manifest's spec as the run's (`admit_spec`: SpecFrozen, with nothing done, for
        an edit a started run refuses), turns Ctrl-C, SIGTERM and SIGHUP into
        `Interrupted`, stops what a driver that died left running (`stop_orphans`),
        and on the way out, however it is left, stops every stage process it started.
        What it does on the way in (a spec edit taken, an orphan stopped) it tells
        `say` too.
        """
        with self._locked():
            for event in self.admit_spec():
                if say is not None:
                    say(event.message)
            previous = {signum: signal.signal(signum, self._on_signal) for signum in STOP_SIGNALS}
            try:
                with self._signals_deferred():
                    self.stop_orphans(say)
                yield
            finally:
                # The stop takes at most STOP_TIMEOUT (then SIGKILL): not to be cut short.
                for signum in STOP_SIGNALS:
                    signal.signal(signum, signal.SIG_IGN)
                try:
                    self.stop_all()
                    self.processes_path.unlink(missing_ok=True)
                finally:
                    for signum, handler in previous.items():
                        signal.signal(signum, handler)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive flock on `run.lock`, which holds this driver's PID.

        The kernel drops the lock when the driver exits, however it exits, so a
        rerun after a SIGKILL is not refused; stage processes do not inherit it
        (Python opens files close-on-exec).
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with self.lock_path.open("a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                raise RunBusy(self.root, handle.read().strip()) from None
            handle.truncate(0)
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            try:
                yield
            finally:
                handle.truncate(0)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._deferring:
            self._pending_signal = self._pending_signal or signum
            return
        raise Interrupted(signum)

    @contextmanager
    def _signals_deferred(self) -> Iterator[None]:
        """A stop signal that arrives in here is raised on the way out, not halfway."""
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
        pending, self._pending_signal = self._pending_signal, None
        if pending is not None:
            raise Interrupted(pending)

    def stop_orphans(self, on_orphan: Callable[[str], object] | None = None) -> list[str]:
        """Stop the stage processes a driver that died left running; says what it stopped.

        Stopped, not adopted. An orphan is no child of this driver: its exit status
        cannot be waited for, and its files do not tell a stage that crashed from
        one still writing; its rank 0 also listens on the dead driver's
        --metrics-port, not necessarily this one's. Stopping it is what Ctrl-C
        would have done: on SIGTERM the trainer saves its `last` checkpoint, and
        every stage resumes when started again (augment from its journal, train and
        the trials from their checkpoints, the others rewrite their outputs
        atomically). The status still has the stage Running with no process behind
        it, so the reconcile that follows starts it again, as after Ctrl-C: at most
        the step in flight is lost, and two processes never share a stage's
        directory. An orphan that already finished is not found (nothing of its
        session is left); its stage starts again and finds its work done (the
        trainer resumes at its last step, exports and reports).
        """
        stopped = []
        for record in local_processes.load_records(self.processes_path):
            if not local_processes.members(record):
                continue
            message = (
                f"stopping {record.job} (PID {record.pid}), left running by a `marco run` "
                "that did not stop it; the stage starts again from what it saved"
            )
            if on_orphan is not None:
                on_orphan(message)
            local_processes.stop(record, STOP_TIMEOUT)
            self.record([Event("Warning", "OrphanStopped", message)])
            stopped.append(message)
        self.processes_path.unlink(missing_ok=True)
        return stopped

    def admit_spec(self) -> list[Event]:
        """Take the manifest's spec as the run's, as the API server takes an update of the
        object: the same spec (read with its defaults) keeps the generation; another one
        is the next generation, unless the run started (`status.startedGeneration`) and
        it edits a field outside api.MUTABLE_AFTER_START, which raises SpecFrozen naming
        each such field, with nothing written. Sets metadata.generation (core reports it
        as `status.observedGeneration`), saves `spec.json` and records a taken edit as a
        Normal Event `SpecChanged` (returned, and in events.jsonl). Called under the
        run's lock, before anything runs.
        """
        spec = dict(self.manifest.get("spec") or {})
        saved = self._saved_spec()
        try:
            status = self.load_status()
            started = status.get("startedGeneration") is not None
        except (OSError, ValueError):  # its passes will say so; judged the stricter way here
            status, started = {}, saved is not None
        events: list[Event] = []
        if saved is None:
            # A new run, or one started by a `marco run` that kept no spec: nothing to
            # compare with; this spec is the run's from now on (said, for a started one).
            generation = int(status.get("observedGeneration") or 1)
            if started:
                message = (
                    f"{self.spec_path} is missing: the spec this run started with is unknown, "
                    f"so this manifest's is taken unchecked as generation {generation}"
                )
                events.append(Event("Warning", "SpecUnchecked", message))
        else:
            generation, before = saved
            changed = spec_changes(before, spec)
            if changed and started:
                frozen = frozen_changes(before, spec)
                if frozen:
                    raise SpecFrozen(self._frozen_message(frozen))
            if changed:
                generation += 1
                message = f"spec edited (generation {generation}): {', '.join(changed)}"
                if started:
                    message += "; applies to the stages started from now on"
                events.append(Event("Normal", "SpecChanged", message))
        self.manifest["metadata"]["generation"] = generation
        atomic_write_text(
            self.spec_path,
            json.dumps({"generation": generation, "spec": spec}, indent=2) + "\n",
        )
        self.record(events)
        return events

    def _saved_spec(self) -> tuple[int, dict[str, Any]] | None:
        """`spec.json`: (generation, spec); None when there is none. SpecFrozen when it
        cannot be read: the spec the run is on is unknown, and edits cannot be judged."""
        try:
            saved = json.loads(self.spec_path.read_text())
            generation, spec = int(saved["generation"]), dict(saved["spec"])
            parse_spec(spec)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise SpecFrozen(
                f"{self.spec_path}: cannot read the spec this run is on ({error}); restore "
                "the file, or delete it to take this manifest's spec unchecked"
            ) from error
        return generation, spec

    def _frozen_message(self, frozen: list[str]) -> str:
        allowed = ", ".join(f"spec.{path}" for path in MUTABLE_AFTER_START)
        return (
            f"{self.root} holds a run that started with another spec; changed: "
            f"{', '.join(frozen)}. A started run's spec is immutable except {allowed} "
            "(a cluster refuses the same edit). Revert those fields (the run's spec is in "
            f"{self.spec_path}), or start a new run with the edited manifest: another "
            "--output-dir, spec.output.path or metadata.name (--retry retries a Failed run "
            "with the spec it started with; it takes no edits)"
        )

    def retry(self) -> list[Event]:
        """A Failed run set to start again from the stage that failed (core.retry_failed)."""
        outcome = retry_failed(self.load_status(), time.time())
        if outcome.events:
            self.save_status(outcome.status)
            self.record(outcome.events)
        return outcome.events

    # ----------------------------------------------------------------- processes

    def command_line(self, command: StageCommand) -> list[str]:
        if command.distributed and self.nproc_per_node > 1:
            return [
                sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc-per-node={self.nproc_per_node}", "-m", "marco_trainer", *command.args,
            ]  # fmt: skip
        return [sys.executable, "-m", "marco_trainer", *command.args]

    def start(self, start: StageStart) -> None:
        """Start a stage's process; an LR trial waits while another trial runs."""
        trial = start.command.trial
        self.logs.mkdir(parents=True, exist_ok=True)
        log_name = start.command.stage if trial is None else f"{start.command.stage}-{trial}"
        job = LocalJob(start, self.logs / f"{log_name}.log")
        self.jobs[start.job_name] = job
        if trial is None or not self._trial_running():
            self._spawn(job)

    def _spawn(self, job: LocalJob) -> None:
        env = dict(os.environ, MARCO_NUM_SHARDS="1", JOB_COMPLETION_INDEX="0")
        env.update(job.start.command.env)  # plan.stage_env: HF_HOME under the run, offline
        env.pop("MARCO_TERMINATION_LOG", None)
        if job.start.command.stage not in ONLINE_STAGES:
            env.pop(TOKEN_ENV, None)  # the caller's hub token, as a pod's: fetch and push only
        with job.log_path.open("ab") as log:
            job.process = subprocess.Popen(
                self.command_line(job.start.command),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # Ctrl-C reaches us, and we stop the stage cleanly
            )
        job.spawned_at = time.monotonic()
        # Recorded at once: a driver killed from here on leaves a process the next finds.
        job.record = local_processes.identify(job.start.job_name, job.process.pid)
        local_processes.save_records(
            self.processes_path, [j.record for j in self.jobs.values() if j.record is not None]
        )

    def _trial_running(self) -> bool:
        return any(
            job.start.command.trial is not None and job.running for job in self.jobs.values()
        )

    def _next_trial(self) -> None:
        """Start the first queued trial once none runs (in candidate order)."""
        if self._trial_running():
            return
        queued = [
            job
            for job in self.jobs.values()
            if job.start.command.trial is not None and job.process is None and not job.suspended
        ]
        if queued:
            self._spawn(min(queued, key=lambda job: job.start.command.trial or 0))

    def stop_all(self) -> None:
        for job in self.jobs.values():
            if job.process is not None:
                _terminate(job)
            else:
                job.suspended = True  # a queued trial never starts after a stop

    def _output_dir(self, command: StageCommand) -> Path:
        if command.trial is not None:
            return Path(self.layout.run.trial_dir(command.trial))
        return Path(self.layout.stage_dir(command.stage))

    def observe(self) -> Observed:
        self._next_trial()
        jobs: dict[str, JobState] = {}
        trials: dict[int, JobState] = {}
        for job in self.jobs.values():
            state = job.state(self._output_dir(job.start.command))
            if state.trial is not None:
                trials[state.trial] = state
            else:
                jobs[state.stage] = state
        training = "train" in jobs and jobs["train"].active
        return Observed(
            jobs=jobs,
            trials=trials,
            evaluations=self.fetch_evaluations() if training else None,
            directive=self.read_directive(),
            now=time.time(),
        )

    def apply(self, outcome: Outcome) -> None:
        # A retried stage's failed "Job" (its process ended), or the train "Job" of a stop the
        # trainer did not honour: its process stopped, with its whole session, before the
        # next stage starts.
        for child in outcome.delete:
            job = self.jobs.get(child.name)
            if child.kind == "Job" and job is not None:
                _terminate(job)
                del self.jobs[child.name]
        if outcome.directive is not None and outcome.directive != self.read_directive():
            self.write_directive(outcome.directive)
        for start in outcome.start:
            self.start(start)
        self.save_status(outcome.status)
        self.record(outcome.events)

    def record(self, events: list[Event]) -> None:
        if not events:
            return
        self.events_path.parent.mkdir(parents=True, exist_ok=True)
        with self.events_path.open("a") as handle:
            for event in events:
                handle.write(
                    json.dumps({"time": time.time(), "type": event.type,
                                "reason": event.reason, "message": event.message}) + "\n"
                )  # fmt: skip

    def body(self, status: dict[str, Any]) -> dict[str, Any]:
        return {**self.manifest, "status": status}

    def step(self) -> Outcome:
        # A stop signal waits for the end of the pass: what it started is recorded
        # and the status saved before Interrupted unwinds.
        with self._signals_deferred():
            status = self.load_status()
            # No Kueue on a machine: spec.queueName has no meaning here, and is ignored.
            outcome = reconcile(
                self.body(status), self.observe(), layout=self.layout, queueing=NO_QUEUES
            )
            self.apply(outcome)
        return outcome

    def failed(self, error: Exception, failures: int, retry_in: float) -> Outcome:
        """Say that a pass failed, as the kopf driver does: a Warning Event (printed and in
        events.jsonl) and the status's Reconciled condition (core.failed_pass). Best effort:
        a status or events file that cannot be read or written is passed over."""
        try:
            current = self.load_status()
        except (OSError, ValueError):
            current = {}
        status, event = failed_pass(
            current, describe_exception(error), failures, retry_in, time.time()
        )
        with suppress(OSError):
            self.save_status(status)
        with suppress(OSError):
            self.record([event])
        return Outcome(status=status, events=[event])


def _terminate(job: LocalJob) -> None:
    """Stop the job's process with every process of its session, and reap it."""
    process = job.process
    if process is None:
        return
    if job.record is not None:
        local_processes.stop(job.record, STOP_TIMEOUT)
        process.wait()
        return
    # Not identified (gone at once, or no /proc): its process group, as far as it goes.
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def load_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: {error}") from error
    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: not a YAML mapping")
    if manifest.get("apiVersion") != API_VERSION or manifest.get("kind") != KIND:
        raise ValueError(f"{path}: expected apiVersion {API_VERSION} and kind {KIND}")
    return manifest


def run_until_done(
    run: LocalRun,
    interval: float,
    on_step: Callable[[LocalRun, Outcome], object] | None = None,
    retry_first: float = RETRY_FIRST,
    retry_cap: float = RETRY_CAP,
) -> dict[str, Any]:
    """Reconcile until settled (a terminal phase, or an invalid spec); returns the status.

    A pass that raises is said (LocalRun.failed) and tried again after core.retry_delay,
    from `retry_first` doubling to `retry_cap`; a pass that goes through resets the wait.
    Only a stage process that cannot be stopped (ChildrenLeft) ends the run.
    """
    failures = 0
    while True:
        try:
            outcome = run.step()
        except ChildrenLeft:
            raise
        except Exception as error:
            failures += 1
            delay = retry_delay(failures, retry_first, retry_cap)
            outcome = run.failed(error, failures, delay)
            if on_step is not None:
                on_step(run, outcome)
            time.sleep(delay)
            continue
        failures = 0
        if on_step is not None:
            on_step(run, outcome)
        if settled(run.body(outcome.status)):
            return outcome.status
        time.sleep(interval)
