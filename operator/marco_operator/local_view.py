"""Terminal view of a local run: one progress row per stage, Events above them."""

from __future__ import annotations

import time
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from marco_contract.layout import STAGES
from marco_contract.status import AsrAdaptationStatus

if TYPE_CHECKING:
    from marco_operator.core import Outcome
    from marco_operator.local import LocalRun


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def stage_detail(stage: str, status: AsrAdaptationStatus) -> str:
    """The one-line summary shown beside a stage's bar."""
    record = status.stages.get(stage)
    if record is None:
        return ""
    if stage == "train" and record.state in ("Running", "Succeeded"):
        return (
            f"cycle {_fmt(status.cycle, 'd')} · LR {_fmt(status.learning_rate, '.2g')} · "
            f"WER {_fmt(status.wer, '.2f')} · best {_fmt(status.best_wer, '.2f')}"
        )
    if stage == "trials" and status.trials:
        done = sum(t.state in ("Succeeded", "Failed") for t in status.trials)
        chosen = next((t for t in status.trials if t.chosen), None)
        picked = f" · LR {chosen.learning_rate:.2g} chosen" if chosen else ""
        return f"{done}/{len(status.trials)} LR trials done{picked}"
    if record.wer is not None:
        return f"WER {record.wer:.2f}%"
    if record.counts:
        return ", ".join(f"{k} {v}" for k, v in sorted(record.counts.items()))
    return record.message or ""


class LocalView:
    def __init__(self, run: LocalRun, console: Console | None = None) -> None:
        self.run = run
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.fields[stage]:<9}"),
            TextColumn("{task.fields[state]:<9}"),
            BarColumn(),
            TextColumn("{task.completed:>5.0f}/{task.total}", style="dim"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[detail]}"),
            console=self.console,
        )
        self.tasks: dict[str, Any] = {}
        self.started: dict[str, float] = {}

    def __enter__(self) -> LocalView:
        self.console.print(f"[bold]marco run[/] → {self.run.root}")
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with suppress(OSError):  # the terminal gone (SIGHUP): the run's exit goes on
            self.progress.stop()

    def update(self, run: LocalRun, outcome: Outcome) -> None:
        for event in outcome.events:
            style = "yellow" if event.type == "Warning" else "cyan"
            self.progress.console.print(f"[{style}]{event.reason}[/] {event.message}")
        status = AsrAdaptationStatus.model_validate(outcome.status)
        max_steps = run.manifest.get("spec", {}).get("training", {}).get("maxSteps", 5000)
        for stage in STAGES:
            record = status.stages.get(stage)
            if record is None or record.state == "Skipped":
                continue
            if stage not in self.tasks:
                total = max_steps if stage == "train" else 1
                self.tasks[stage] = self.progress.add_task(
                    stage, total=total, stage=stage, state=record.state, detail=""
                )
            done = record.state in ("Succeeded", "Failed")
            completed = (status.step or 0) if stage == "train" and not done else None
            if completed is None:
                completed = self.progress.tasks[self.tasks[stage]].total if done else 0
            self.progress.update(
                self.tasks[stage],
                completed=completed,
                state=record.state,
                detail=stage_detail(stage, status),
            )

    def summary(self, status: AsrAdaptationStatus) -> None:
        self.console.print(f"[bold]{status.phase}[/]: {status.message or ''}")
        if status.baseline_wer is not None or status.final_wer is not None:
            self.console.print(
                f"target test WER: baseline {_fmt(status.baseline_test_wer, '.2f')}% → "
                f"final {_fmt(status.final_wer, '.2f')}%"
            )
        self.console.print(f"status: {self.run.status_path}  (at {time.strftime('%H:%M:%S')})")
