import json

import matplotlib.image as mpimg

from marco_contract.formats import Evaluation, EvaluationHistory
from marco_contract.status import (
    AsrAdaptationStatus,
    CycleRecord,
    StageStatus,
    TrialRecord,
    WerPoint,
)
from marco_trainer.cli import main


def make_run(tmp_path):
    run = tmp_path / "run"
    (run / "train").mkdir(parents=True)
    wers = [30.0, 28.0, 27.5, 27.9, 26.0, 26.2]
    history = [
        Evaluation(step=50 * (i + 1), cycle=i // 2, lr=[1e-6, 8e-6, 9e-6][i // 2], wer=w,
                   loss=2.0 - 0.2 * i, time=float(i))
        for i, w in enumerate(wers)
    ]  # fmt: skip
    (run / "train" / "evaluations.json").write_text(
        EvaluationHistory(evaluations=history).model_dump_json()
    )
    status = AsrAdaptationStatus(
        phase="Succeeded", baseline_wer=33.0, baseline_test_wer=35.0, final_wer=24.5,
        best_wer=26.0, best_step=250,
        cycles=[CycleRecord(cycle=0, learning_rate=1e-6, reason="geometric mean", wers=wers[:2],
                            sigma_wer=1.0),
                CycleRecord(cycle=1, learning_rate=8e-6, reason="Eq. 1", wers=wers[2:4],
                            sigma_wer=0.2),
                CycleRecord(cycle=2, learning_rate=9e-6, reason="Eq. 1", wers=wers[4:])],
        stages={"baseline": StageStatus(state="Succeeded", wer=35.0,
                                        start_time="2026-11-22T10:00:00Z",
                                        completion_time="2026-11-22T10:01:30Z"),
                "train": StageStatus(state="Succeeded", start_time="2026-11-22T10:01:30Z",
                                     completion_time="2026-11-22T10:09:00Z")},
    )  # fmt: skip
    (run / "status.json").write_text(status.model_dump_json(by_alias=True))
    return run


def test_report_shows_wers_cycles_and_plots(tmp_path, capsys):
    run = make_run(tmp_path)
    assert main(["report", "--run-dir", str(run)]) == 0
    out = capsys.readouterr().out
    assert "target test WER: baseline 35.00% → final 24.50%" in out
    text = (run / "report" / "report.md").read_text()
    assert "| final (target test) | 24.50 |" in text
    assert "final / baseline = **0.70**" in text
    assert text.count("| Eq. 1 |") == 2 and "| baseline | Succeeded | 90 |" in text
    for png in ("curves.png", "cycles.png", "stages.png"):
        image = mpimg.imread(run / "report" / png)
        assert image.shape[0] > 100 and image.shape[1] > 400, png
        assert image.std() > 0.01, f"{png} is blank"
    summary = json.loads((run / "report" / "report.json").read_text())
    assert summary["best_step"] == 250 and len(summary["evaluations"]) == 6


def test_report_names_a_missing_status_file(tmp_path, capsys):
    import pytest

    with pytest.raises(ValueError, match=r"status\.json"):
        main(["report", "--run-dir", str(tmp_path)])


def test_report_plots_one_line_per_lr_trial(tmp_path):
    run = make_run(tmp_path)
    status = AsrAdaptationStatus.model_validate_json((run / "status.json").read_text())

    def curve(*wers):
        return [WerPoint(step=10 * (i + 1), wer=w) for i, w in enumerate(wers)]

    status.trials = [
        TrialRecord(index=0, learning_rate=1e-7, state="Succeeded", best_wer=32.0, best_step=20,
                    curve=curve(33.0, 32.0)),
        TrialRecord(index=1, learning_rate=1e-6, state="Succeeded", best_wer=29.0, best_step=20,
                    curve=curve(31.0, 29.0), chosen=True),
        TrialRecord(index=2, learning_rate=1e-5, state="Failed", message="exit code 1: OOM"),
    ]  # fmt: skip
    (run / "status.json").write_text(status.model_dump_json(by_alias=True))
    assert main(["report", "--run-dir", str(run)]) == 0
    text = (run / "report" / "report.md").read_text()
    assert "| 1 | 1e-06 | Succeeded | 29.00 | 20 | chosen |" in text
    assert "| 2 | 1e-05 | Failed | – | – | exit code 1: OOM |" in text
    assert "![LR trials](trials.png)" in text
    image = mpimg.imread(run / "report" / "trials.png")
    assert image.shape[1] > 400 and image.std() > 0.01
    # Two curves drawn in matplotlib's first two colours (C0 blue, C1 orange), no third.
    rgb = image[..., :3]

    def has_colour(hex_colour):
        target = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        return bool((abs(rgb - target).max(axis=-1) < 0.02).any())

    assert has_colour("#1f77b4") and has_colour("#ff7f0e") and not has_colour("#2ca02c")
