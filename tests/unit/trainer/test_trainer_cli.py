import subprocess
import sys

import pytest

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
    assert (args.metrics_port, args.lora_r, args.lora_target_modules) == (9400, 16, "q_proj,v_proj")


def test_bad_flag_values_are_named():
    with pytest.raises(SystemExit, match="--gradient-accumulation"):
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
                "--gradient-accumulation",
                "0",
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
