"""The LR trials: candidates, the choice, their Jobs and the local driver's queue."""

import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from marco_contract.formats import TERMINATION_MESSAGE_LIMIT, StageResult
from marco_contract.status import AsrAdaptationStatus, StageStatus, TrialRecord
from marco_operator.api import TrialsSpec, parse_spec
from marco_operator.core import StageStart
from marco_operator.local import LocalRun
from marco_operator.local_view import stage_detail
from marco_operator.plan import trial_command
from marco_operator.resources import LABEL_STAGE, LABEL_TRIAL, Owner, cluster_layout, stage_job
from marco_operator.trials import candidate_learning_rates, choose, log_spaced

ROOT = Path(__file__).resolve().parents[3]


def test_three_candidates_span_the_bounds_a_decade_apart():
    assert log_spaced(1e-6, 1e-4, 3) == [1e-6, 1e-5, 1e-4]


def test_five_candidates_are_half_decades_rounded_to_three_digits():
    # 10^-6.5 = 3.16227...e-7 and 10^-5.5 = 3.16227...e-6, rounded to 3 significant digits.
    assert log_spaced(1e-7, 1e-5, 5) == [1e-7, 3.16e-7, 1e-6, 3.16e-6, 1e-5]


def test_explicit_candidates_win_over_count_and_must_lie_inside_the_bounds():
    assert candidate_learning_rates(TrialsSpec(learning_rates=[2e-6, 5e-7]), 1e-7, 1e-5) == [
        2e-6, 5e-7]  # fmt: skip
    with pytest.raises(ValueError, match=r"spec.trials.learningRates: 2e-05 outside"):
        candidate_learning_rates(TrialsSpec(learning_rates=[1e-6, 2e-5]), 1e-7, 1e-5)


def test_explicit_candidates_outside_the_spec_bounds_are_refused_at_parse_time():
    spec = yaml.safe_load((ROOT / "examples" / "demo-local.yaml").read_text())["spec"]
    spec["training"]["learningRate"] = {"min": 1e-7, "max": 1e-5}
    spec["trials"] = {"enabled": True, "learningRates": [1e-6, 1e-4]}
    with pytest.raises(ValueError, match=r"trials\.learningRates must lie inside"):
        parse_spec(spec)


def record(index, lr, state="Succeeded", wer=None):
    return TrialRecord(index=index, learning_rate=lr, state=state, best_wer=wer)


def test_the_lowest_best_wer_wins_and_a_tie_goes_to_the_smaller_lr():
    trials = [record(0, 1e-5, wer=31.0), record(1, 1e-6, wer=31.0), record(2, 1e-7, wer=35.0)]
    assert choose(trials).index == 1
    assert choose([record(0, 1e-7, wer=40.0), record(1, 1e-6, wer=39.9)]).index == 1


def test_failed_trials_do_not_decide_and_none_left_decides_nothing():
    trials = [record(0, 1e-7, "Failed"), record(1, 1e-6, wer=50.0)]
    assert choose(trials).index == 1
    assert choose([record(0, 1e-7, "Failed"), record(1, 1e-6, "Failed")]) is None


def test_a_curve_too_long_for_a_termination_message_is_dropped_before_the_best_wer():
    curve = [(step, 12.3456) for step in range(0, 40_000, 100)]  # 400 points, ~6 kB
    text = StageResult(stage="train", wer=12.3456, best_step=100, curve=curve)
    message = text.to_termination_message()
    assert len(message.encode()) <= TERMINATION_MESSAGE_LIMIT
    parsed = StageResult.model_validate_json(message)
    assert (parsed.wer, parsed.best_step, parsed.curve) == (12.3456, 100, [])
    short = StageResult(stage="train", wer=1.0, curve=[(10, 2.0), (20, 1.0)])
    assert StageResult.model_validate_json(short.to_termination_message()).curve == [
        (10, 2.0), (20, 1.0)]  # fmt: skip


def test_a_trial_job_is_valid_labelled_and_wants_one_gpu_and_no_directive():
    spec = parse_spec(
        yaml.safe_load((ROOT / "examples" / "whisper-large-v3-telephony.yaml").read_text())["spec"]
    )
    owner = Owner(name="a" * 45, namespace="asr", uid="uid")  # the longest name allowed
    command = trial_command(
        spec, cluster_layout(spec, owner.name), 15, 1e-6, name=owner.name, family="encoder-decoder"
    )
    job = stage_job(spec, owner, command)
    kubernetes_validate.validate(job, "1.35.0", strict=True)
    name = job["metadata"]["name"]
    assert name == "a" * 45 + "-trials-15" and len(name) + 6 <= 63  # pod: <job>-<5 random>
    for labels in (job["metadata"]["labels"], job["spec"]["template"]["metadata"]["labels"]):
        assert (labels[LABEL_STAGE], labels[LABEL_TRIAL]) == ("trials", "15")
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "completionMode" not in job["spec"]
    assert all(v["name"] != "control" for v in pod["volumes"])


def test_the_local_driver_runs_trials_one_after_another(tmp_path):
    manifest = yaml.safe_load((ROOT / "examples" / "demo-local.yaml").read_text())
    run = LocalRun(manifest, data_dir=tmp_path, output_dir=tmp_path / "out")
    spec = parse_spec(manifest["spec"])
    # Each "trial" exits when its go-file appears, so the test decides when one ends.
    gates = [tmp_path / f"go-{i}" for i in range(3)]

    def command_line(command):
        gate = gates[command.trial]
        wait = f"import os,time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.01)"
        return [sys.executable, "-c", wait]

    run.command_line = command_line
    for index in range(3):
        command = trial_command(spec, run.layout, index, 1e-6, name="demo", family="auto")
        run.start(StageStart(stage="trials", job_name=f"demo-trials-{index}", command=command))
    try:
        for finishing in range(3):
            states = run.observe().trials
            assert [states[i].active for i in range(3)] == [
                1 if i == finishing else 0 for i in range(3)]  # fmt: skip
            assert all(not states[i].complete for i in range(finishing, 3))
            gates[finishing].touch()
            run.jobs[f"demo-trials-{finishing}"].process.wait(timeout=30)
        states = run.observe().trials
        assert all(states[i].complete for i in range(3))
        logs = sorted(path.name for path in run.logs.glob("trials-*.log"))
        assert logs == ["trials-0.log", "trials-1.log", "trials-2.log"]
    finally:
        for gate in gates:
            gate.touch()
        run.stop_all()


def test_the_local_view_counts_finished_trials_and_names_the_chosen_lr():
    status = AsrAdaptationStatus(
        stages={"trials": StageStatus(state="Running")},
        trials=[record(0, 1e-7, wer=40.0), record(1, 1e-6, "Failed"), record(2, 1e-5, "Running")],
    )
    assert stage_detail("trials", status) == "2/3 LR trials done"
    status.trials[2] = record(2, 1e-5, wer=30.0)
    status.trials[2].chosen = True
    assert stage_detail("trials", status) == "3/3 LR trials done · LR 1e-05 chosen"
