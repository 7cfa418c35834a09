import subprocess
import sys

import pytest

from marco_contract.exit_codes import BAD_INPUT
from marco_trainer.cli import STAGE_MODULES, build_parser, main
from marco_trainer.export import ExportInfo, export_checkpoint, model_card

SCRIPT = """
import sys
from marco_trainer.cli import build_parser
for command in ("train", "evaluate", "export"):
    try:
        build_parser().parse_args([command, "--help"])
    except SystemExit:
        pass
heavy = sorted(m for m in ("torch", "transformers", "peft") if m in sys.modules)
print(",".join(heavy) or "none")
"""


def test_help_does_not_import_torch():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "none"


def test_stages_are_registered():
    assert {"marco_trainer.evaluate", "marco_trainer.train.cli", "marco_trainer.export"} <= set(
        STAGE_MODULES
    )
    args = build_parser().parse_args(
        [
            "train",
            "--model",
            "m",
            "--train-manifest",
            "a.jsonl",
            "--train-manifest",
            "b",
            "--validation-manifest",
            "v.jsonl",
            "--output-dir",
            "o",
        ]
    )
    assert args.train_manifest == ["a.jsonl", "b"]
    assert (args.per_device_batch_size, args.gradient_accumulation, args.eval_every) == (4, 8, 50)
    assert (args.metrics_port, args.lora_r) == (9400, 16)


def test_flags_left_out_take_the_api_defaults():
    """Run by hand, the trainer uses the defaults the AsrAdaptation API documents
    (they had drifted: 1000 steps, q/v-only LoRA, 35 chars/s)."""
    from marco_contract.argv import parse_options
    from marco_trainer.audio.filtering import FilterRules
    from marco_trainer.train.options import TrainOptions

    required = ["--model", "m", "--train-manifest", "t", "--validation-manifest", "v"]
    opts = parse_options(
        TrainOptions, build_parser().parse_args(["train", *required, "--output-dir", "o"])
    )
    assert (opts.max_steps, opts.eval_samples, opts.precision) == (5000, 200, "auto")
    assert opts.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert (opts.lora.r, opts.lora.alpha, opts.lora.dropout) == (16, 32, 0.05)
    assert (opts.language, opts.task, opts.gradient_checkpointing) == ("en", "transcribe", False)
    rules = parse_options(
        FilterRules, build_parser().parse_args(["filter", "--manifest", "m", "--output-dir", "o"])
    )
    assert (rules.min_duration, rules.max_duration, rules.max_chars_per_second) == (0.3, 30, 30)
    assert (rules.min_chars_per_second, rules.max_text_tokens) == (1.0, 448)
    augment = build_parser().parse_args(
        ["augment", "--manifest", "m", "--output-dir", "o", "--preset", "telephony"]
    )
    assert (augment.copies, augment.seed) == (1, 0)
    evaluate = build_parser().parse_args(["evaluate", "--model", "m", "--manifest", "x",
                                          "--output-dir", "o"])  # fmt: skip
    assert (evaluate.max_samples, evaluate.language, evaluate.task) == (None, "en", "transcribe")


def test_list_and_switch_flags_parse_into_the_options():
    from marco_contract.argv import parse_options
    from marco_trainer.train.options import TrainOptions

    argv = ["train", "--model", "m", "--train-manifest", "t", "--validation-manifest", "v",
            "--output-dir", "o", "--lora-target-modules", "q_proj,gate_proj",
            "--gradient-checkpointing", "--no-prefetch", "--full-finetune"]  # fmt: skip
    opts = parse_options(TrainOptions, build_parser().parse_args(argv))
    assert opts.lora.target_modules == ["q_proj", "gate_proj"]
    assert (opts.gradient_checkpointing, opts.prefetch, opts.full_finetune) == (True, False, True)
    assert opts.feature_cache_mb is None  # unset: sized from the container's memory


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--gradient-accumulation", "0"), ("--lora-r", "0"), ("--metrics-port", "70000"),
     ("--lora-dropout", "1.0")],
)  # fmt: skip
def test_bad_flag_values_are_named(flag, value):
    with pytest.raises(SystemExit, match=f"invalid value for {flag}:"):
        main(
            [
                "train",
                "--model",
                "m",
                "--train-manifest",
                "a",
                "--validation-manifest",
                "v",
                "--output-dir",
                "o",
                flag,
                value,
            ]
        )


def test_model_card_states_data_steps_and_both_wers():
    card = model_card(
        ExportInfo(
            base_model="openai/whisper-large-v3",
            family="encoder-decoder",
            language="en",
            train_manifests=["/data/train.jsonl"],
            train_utterances=1200,
            train_hours=1.5,
            steps=900,
            best_step=600,
            baseline_wer=36.24,
            final_wer=21.14,
        )
    )
    assert card.startswith("---\n") and "base_model: openai/whisper-large-v3" in card
    assert "/data/train.jsonl" in card and "1200 utterances, 1.50 hours" in card
    assert "optimizer steps: 900" in card and "step 600" in card
    assert "36.24 %" in card and "21.14 %" in card and "-15.10 points" in card


def test_export_refuses_a_folder_that_is_no_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="--checkpoint"):
        export_checkpoint(tmp_path, tmp_path / "out")


def test_evaluate_exports_the_best_checkpoint_a_stopped_train_stage_left_unexported(tmp_path):
    """A train stage whose stop was enforced (its Job deleted) left `checkpoints/best` and no
    `export`: evaluate exports it first (the model files, without the trainer's own), once."""
    import json

    from marco_trainer.evaluate import export_if_missing

    best = tmp_path / "train" / "checkpoints" / "best"
    best.mkdir(parents=True)
    (best / "config.json").write_text('{"model_type": "whisper"}')
    (best / "model.safetensors").write_bytes(b"weights")
    (best / "optimizer.pt").write_bytes(b"trainer state")
    (best / "best.json").write_text(
        json.dumps({"step": 40, "wer": 28.95, "family": "encoder-decoder", "base_model": "m"})
    )
    export = tmp_path / "train" / "export"
    assert export_if_missing(str(export), str(best)) is True
    assert (export / "model.safetensors").read_bytes() == b"weights"
    assert not (export / "optimizer.pt").exists() and not (export / "best.json").exists()
    info = json.loads((export / "marco_export.json").read_text())
    assert (info["best_step"], info["final_wer"]) == (40, 28.95)
    # The train stage's own export (or this one) is there: nothing is exported again.
    (best / "model.safetensors").write_bytes(b"newer weights")
    assert export_if_missing(str(export), str(best)) is False
    assert (export / "model.safetensors").read_bytes() == b"weights"


def test_evaluate_says_when_there_is_neither_a_model_nor_a_checkpoint(tmp_path):
    from marco_trainer.evaluate import export_if_missing

    with pytest.raises(SystemExit, match=r"--export-checkpoint .* does not exist"):
        export_if_missing(str(tmp_path / "export"), str(tmp_path / "checkpoints" / "best"))
    assert export_if_missing(str(tmp_path / "export"), None) is False


def test_shards_waiting_for_another_s_export_do_not_export_again(tmp_path, monkeypatch):
    """The shards of a sharded evaluate start together: one exports, the rest wait for its
    lock and then find the model there (exporting again would swap the folder under a
    shard reading it)."""
    import fcntl
    import threading

    from marco_trainer.evaluate import export_if_missing, export_lock

    best = tmp_path / "train" / "checkpoints" / "best"
    best.mkdir(parents=True)
    (best / "config.json").write_text('{"model_type": "whisper"}')
    export = tmp_path / "train" / "export"
    waiting = threading.Event()
    real_flock = fcntl.flock

    def flock(fd, operation):
        if operation == fcntl.LOCK_EX and threading.current_thread() is not main:
            waiting.set()  # the other shard has looked (no model yet) and now waits
        return real_flock(fd, operation)

    def other_shard() -> None:
        found.append(export_if_missing(str(export), str(best)))

    main = threading.current_thread()
    found: list[bool] = []
    with export_lock(export):  # this "shard" is exporting
        monkeypatch.setattr(fcntl, "flock", flock)
        other = threading.Thread(target=other_shard)
        other.start()
        assert waiting.wait(timeout=10), "the other shard never asked for the lock"
        export.mkdir()
        (export / "config.json").write_text('{"exported": "by the first shard"}')
    other.join(timeout=10)
    assert found == [False]
    assert (export / "config.json").read_text() == '{"exported": "by the first shard"}'


def test_augment_refuses_speed_factors_for_the_telephony_preset(tmp_path, capsys):
    manifest = tmp_path / "train.jsonl"
    manifest.write_text("")
    code = main(["augment", "--manifest", str(manifest), "--output-dir", str(tmp_path / "out"),
                 "--preset", "telephony", "--speed-factors", "0.9,1.1"])  # fmt: skip
    assert code == BAD_INPUT
    assert "--speed-factors: the profile chain only" in capsys.readouterr().err
    assert not (tmp_path / "out" / "manifest.jsonl").exists()
