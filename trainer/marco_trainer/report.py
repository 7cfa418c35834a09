"""`marco-trainer report`: the run report (Markdown + PNG) of one adaptation.

Reads what a run leaves in its output directory — `status.json` (the CR
status), `train/evaluations.json` (the trainer's history), optional profile
match results — and draws the paper's Fig. 2 (WER and loss against steps with
the LR cycles shaded), the LR and σ_WER per cycle, the LR trials' WER curves
(when the run had them) and the stage timings.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from marco_contract.files import atomic_write_text
from marco_contract.formats import Evaluation, EvaluationHistory
from marco_contract.layout import RunPaths
from marco_contract.status import AsrAdaptationStatus

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class StageTiming(BaseModel):
    stage: str
    state: str
    seconds: float | None = None
    detail: str = ""


class RunReport(BaseModel):
    """Everything the Markdown and the plots show, in one validated object."""

    name: str
    phase: str
    message: str | None = None
    family: str | None = None
    baseline_wer: float | None = None
    baseline_test_wer: float | None = None
    final_wer: float | None = None
    best_wer: float | None = None
    best_step: int | None = None
    evaluations: list[Evaluation] = Field(default_factory=list)
    status: AsrAdaptationStatus
    stages: list[StageTiming] = Field(default_factory=list)
    images: dict[str, str] = Field(default_factory=dict)
    extra_sections: list[str] = Field(default_factory=list)


def _seconds(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    return (datetime.strptime(end, fmt) - datetime.strptime(start, fmt)).total_seconds()


def stage_timings(status: AsrAdaptationStatus) -> list[StageTiming]:
    timings = []
    for stage, record in status.stages.items():
        detail = f"WER {record.wer:.2f}%" if record.wer is not None else ""
        if record.counts:
            counts = ", ".join(f"{k} {v}" for k, v in sorted(record.counts.items()))
            detail = f"{detail}; {counts}" if detail else counts
        timings.append(
            StageTiming(
                stage=stage,
                state=record.state,
                seconds=_seconds(record.start_time, record.completion_time),
                detail=detail,
            )
        )
    return timings


def build_report(run_dir: Path, name: str | None = None) -> RunReport:
    paths = RunPaths(str(run_dir))
    status_path = Path(paths.status_file)
    if not status_path.exists():
        raise ValueError(f"{status_path}: no status file; is this a `marco run` output directory?")
    status = AsrAdaptationStatus.model_validate_json(status_path.read_text())
    history_path = Path(paths.evaluations_file)
    evaluations: list[Evaluation] = []
    if history_path.exists():
        evaluations = EvaluationHistory.model_validate_json(history_path.read_text()).evaluations
    return RunReport(
        name=name or run_dir.name,
        phase=status.phase,
        message=status.message,
        family=status.family,
        baseline_wer=status.baseline_wer,
        baseline_test_wer=status.baseline_test_wer,
        final_wer=status.final_wer,
        best_wer=status.best_wer,
        best_step=status.best_step,
        evaluations=sorted(evaluations, key=lambda e: e.step),
        status=status,
        stages=stage_timings(status),
    )


# ----------------------------------------------------------------------------- plots


def _pyplot() -> ModuleType:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def plot_training_curves(report: RunReport, path: Path) -> Path:
    """WER and loss against steps, each LR cycle shaded and labelled (paper Fig. 2)."""
    plt = _pyplot()
    evaluations = report.evaluations
    fig, ax = plt.subplots(figsize=(10, 5))
    steps = [e.step for e in evaluations]
    ax.plot(steps, [e.wer for e in evaluations], "o-", color="tab:blue", label="validation WER")
    if report.baseline_wer is not None:
        ax.axhline(report.baseline_wer, ls="--", color="gray", label="baseline WER0")
    if report.best_step is not None and report.best_wer is not None:
        ax.plot([report.best_step], [report.best_wer], "*", ms=16, color="gold", mec="k",
                label=f"best {report.best_wer:.2f}% @ {report.best_step}")  # fmt: skip
    ax.set_xlabel("step")
    ax.set_ylabel("WER (%)")
    handles, labels = ax.get_legend_handles_labels()
    losses = [(e.step, e.loss) for e in evaluations if e.loss is not None]
    if losses:
        twin = ax.twinx()
        twin.plot(*zip(*losses, strict=True), "s--", color="tab:red", alpha=0.6, label="loss")
        twin.set_ylabel("training loss", color="tab:red")
        more = twin.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    cycles: dict[int, list[Evaluation]] = {}
    for e in evaluations:
        cycles.setdefault(e.cycle, []).append(e)
    previous_end = 0
    for i, (cycle, items) in enumerate(sorted(cycles.items())):
        end = max(e.step for e in items)
        ax.axvspan(previous_end, end, color="tab:green" if i % 2 else "tab:olive", alpha=0.12)
        label = f"c{cycle}\n{items[0].lr:.1e}"
        middle = (previous_end + end) / 2
        ax.text(middle, 1.01, label, transform=ax.get_xaxis_transform(), ha="center", fontsize=7)
        previous_end = end
    ax.legend(handles, labels, loc="upper right", fontsize=8)
    ax.set_title(f"{report.name}: WER and loss by step, LR cycles shaded", pad=28)
    return _save(fig, path)


def plot_cycles(report: RunReport, path: Path) -> Path:
    """The LR each cycle ran at and the σ_WER measured in it (what Eq. 1 / Eq. 2 acted on)."""
    plt = _pyplot()
    cycles = report.status.cycles
    fig, (lr_ax, sigma_ax) = plt.subplots(1, 2, figsize=(10, 3.5))
    numbers = [c.cycle for c in cycles]
    lr_ax.step(numbers, [c.learning_rate for c in cycles], where="mid", marker="o")
    lr_ax.set_yscale("log")
    lr_ax.set_xlabel("cycle")
    lr_ax.set_ylabel("learning rate")
    lr_ax.set_title("LR per cycle")
    sigmas = [(c.cycle, c.sigma_wer) for c in cycles if c.sigma_wer is not None]
    if sigmas:
        sigma_ax.bar(*zip(*sigmas, strict=True), color="tab:purple")
    sigma_ax.set_xlabel("cycle")
    sigma_ax.set_ylabel("σ_WER (WER points)")
    sigma_ax.set_title("WER spread per cycle")
    return _save(fig, path)


def plot_trials(report: RunReport, path: Path) -> Path:
    """Each LR trial's validation WER by step, one line per LR; the chosen one bold."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    for trial in report.status.trials:
        if not trial.curve:
            continue
        label = f"LR {trial.learning_rate:.2g}" + (" (chosen)" if trial.chosen else "")
        ax.plot(
            [p.step for p in trial.curve],
            [p.wer for p in trial.curve],
            "o-",
            lw=2.5 if trial.chosen else 1.2,
            label=label,
        )
    if report.baseline_wer is not None:
        ax.axhline(report.baseline_wer, ls="--", color="gray", label="baseline WER0")
    ax.set_xlabel("step")
    ax.set_ylabel("WER (%)")
    ax.set_title("LR trials: validation WER by step")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_stage_timings(report: RunReport, path: Path) -> Path:
    plt = _pyplot()
    timed = [t for t in report.stages if t.seconds is not None]
    fig, ax = plt.subplots(figsize=(8, 0.5 + 0.45 * max(1, len(timed))))
    ax.barh([t.stage for t in timed], [t.seconds for t in timed], color="tab:cyan")
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    ax.set_title("stage timings")
    return _save(fig, path)


# ----------------------------------------------------------------------------- markdown


def _f(value: float | None, spec: str = ".2f") -> str:
    return "–" if value is None else format(value, spec)


def render_markdown(report: RunReport) -> str:
    lines = [f"# marco-asr run report: {report.name}", ""]
    lines += [f"**Phase:** {report.phase}" + (f" — {report.message}" if report.message else ""), ""]
    lines += ["| | WER (%) |", "|---|---|"]
    lines += [f"| baseline (WER0, target validation) | {_f(report.baseline_wer)} |"]
    lines += [f"| best during training (validation) | {_f(report.best_wer)} "
              f"(step {report.best_step if report.best_step is not None else '–'}) |"]  # fmt: skip
    lines += [f"| baseline (pre-trained model, target test) | {_f(report.baseline_test_wer)} |"]
    lines += [f"| final (target test) | {_f(report.final_wer)} |"]
    if report.baseline_test_wer and report.final_wer is not None:
        ratio = report.final_wer / report.baseline_test_wer
        lines += ["", f"On the target test set, final / baseline = **{ratio:.2f}**."]
    if "curves" in report.images:
        lines += ["", f"![WER and loss by step]({report.images['curves']})"]
    lines += ["", "## Learning-rate cycles", "",
              "| cycle | LR | why | WERs | σ_WER |", "|---|---|---|---|---|"]  # fmt: skip
    for c in report.status.cycles:
        wers = ", ".join(f"{w:.2f}" for w in c.wers)
        lines += [f"| {c.cycle} | {c.learning_rate:.3g} | {c.reason} | {wers} | "
                  f"{_f(c.sigma_wer, '.3f')} |"]  # fmt: skip
    if report.status.trials:
        lines += ["", "## LR trials", "", "| trial | LR | state | best WER | at step | |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for trial in report.status.trials:
            note = "chosen" if trial.chosen else (trial.message or "")
            step = trial.best_step if trial.best_step is not None else "–"
            lines += [f"| {trial.index} | {trial.learning_rate:.3g} | {trial.state} | "
                      f"{_f(trial.best_wer)} | {step} | {note} |"]  # fmt: skip
        if "trials" in report.images:
            lines += ["", f"![LR trials]({report.images['trials']})"]
    if report.status.stop is not None:
        lines += ["", f"Stopped: {report.status.stop.reason}."]
    if "cycles" in report.images:
        lines += ["", f"![LR and σ per cycle]({report.images['cycles']})"]
    lines += ["", "## Stages", "", "| stage | state | seconds | detail |", "|---|---|---|---|"]
    for t in report.stages:
        lines += [f"| {t.stage} | {t.state} | {_f(t.seconds, '.0f')} | {t.detail} |"]
    if "stages" in report.images:
        lines += ["", f"![stage timings]({report.images['stages']})"]
    for section in report.extra_sections:
        lines += ["", section]
    return "\n".join(lines) + "\n"


def profile_match_section(run_dir: Path, output_dir: Path) -> str | None:
    """Profile the clean and the augmented training audio and compare both with the target.

    Only when the run profiled the target and augmented against it. Profiling is
    cheap (thousands of times real time), so the report measures instead of trusting.
    """
    from marco_trainer.audio.match import DEFAULT_THRESHOLD, compare_profiles, plot_match
    from marco_trainer.audio.profile import load_profile

    paths = RunPaths(str(run_dir))
    augmented_dir, target_dir = Path(paths.stage_dir("augment")), Path(paths.stage_dir("profile"))
    source_manifest = Path(paths.kept_manifest)
    if not (augmented_dir.is_dir() and Path(paths.profile_file).exists()):
        return None
    measured = output_dir / "profiles"
    inputs = {"augmented": augmented_dir}
    if source_manifest.exists():
        inputs["source"] = source_manifest
    for name, manifest in inputs.items():
        subprocess.run(
            [sys.executable, "-m", "marco_trainer", "profile", "--input", str(manifest),
             "--output-dir", str(measured / name), "--num-shards", "1", "--shard-index", "0"],
            check=True, capture_output=True,
        )  # fmt: skip
    target = load_profile(target_dir)
    augmented = load_profile(measured / "augmented")
    source = load_profile(measured / "source") if "source" in inputs else None
    match = compare_profiles(target, augmented, source, DEFAULT_THRESHOLD)
    plots = plot_match(target, augmented, source, output_dir / "match")
    lines = ["## Profile match (augmented vs target)", "",
             f"KS distance per metric; matched when ≤ {DEFAULT_THRESHOLD}.", "",
             "| metric | augmented vs target | source vs target | matched |",
             "|---|---|---|---|"]  # fmt: skip
    for m in match.metrics:
        src = "–" if m.ks_source is None else f"{m.ks_source:.2f}"
        lines.append(f"| {m.metric} | {m.ks_augmented:.2f} | {src} | {m.matched} |")
    lines.append("")
    lines += [f"![{name}]({Path(path).relative_to(output_dir)})" for name, path in plots.items()]
    return "\n".join(lines)


def write_report(run_dir: Path, output_dir: Path | None = None) -> Path:
    output_dir = output_dir or Path(RunPaths(str(run_dir)).report_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    report = build_report(run_dir)
    match = profile_match_section(run_dir, output_dir)
    if match:
        report.extra_sections.append(match)
    if report.evaluations:
        report.images["curves"] = plot_training_curves(report, output_dir / "curves.png").name
    if report.status.cycles:
        report.images["cycles"] = plot_cycles(report, output_dir / "cycles.png").name
    if any(t.curve for t in report.status.trials):
        report.images["trials"] = plot_trials(report, output_dir / "trials.png").name
    if any(t.seconds is not None for t in report.stages):
        report.images["stages"] = plot_stage_timings(report, output_dir / "stages.png").name
    path = output_dir / "report.md"
    atomic_write_text(path, render_markdown(report))
    atomic_write_text(output_dir / "report.json", report.model_dump_json(indent=2))
    return path


def _command(args: argparse.Namespace) -> int:
    path = write_report(Path(args.run_dir), Path(args.output_dir) if args.output_dir else None)
    summary: dict[str, Any] = json.loads((path.parent / "report.json").read_text())
    print(f"report: {path}")
    print(
        f"target test WER: baseline {_f(summary['baseline_test_wer'])}% → "
        f"final {_f(summary['final_wer'])}%"
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help="write the run report (Markdown + PNG)")
    parser.add_argument("--run-dir", required=True, help="the adaptation's output directory")
    parser.add_argument("--output-dir", help="default: RUN_DIR/report")
    parser.set_defaults(func=_command)
