"""Export: best checkpoint → a self-contained model directory with a model card.

A full checkpoint is copied (model + processor files); an adapter checkpoint
(LoRA) is merged into its base model first, so the export loads with plain
``from_pretrained`` and needs neither peft nor the base model's files.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from pydantic import BaseModel, Field

#: Trainer bookkeeping that a model directory must not carry.
TRAINER_FILES = {"optimizer.pt", "rng.pt", "trainer_state.json"}


class ExportInfo(BaseModel):
    """``marco_export.json``: what the model card states, machine-readable."""

    base_model: str | None = None
    family: str | None = None
    language: str | None = None
    adaptation: str | None = None
    train_manifests: list[str] = []
    train_utterances: int | None = None
    train_hours: float | None = None
    steps: int | None = None
    best_step: int | None = None
    averaged_steps: list[int] | None = Field(
        default=None, description="The evaluated steps whose weights the export averages."
    )
    baseline_wer: float | None = None
    final_wer: float | None = None
    merged_adapter: bool = False


def _fmt(value: float | None, unit: str = " %") -> str:
    return "not measured" if value is None else f"{value:.2f}{unit}"


def model_card(info: ExportInfo) -> str:
    """README.md of an exported model (Hugging Face model-card front matter + text)."""
    front = ["---", "library_name: transformers", "pipeline_tag: automatic-speech-recognition"]
    if info.base_model:
        front.append(f"base_model: {info.base_model}")
    if info.language:
        front.append(f"language: [{info.language}]")
    front += ["tags: [marco-asr, domain-adaptation]", "---", ""]
    data = "\n".join(f"- `{m}`" for m in info.train_manifests) or "- (not recorded)"
    gain = ""
    if info.baseline_wer is not None and info.final_wer is not None:
        gain = f" ({info.final_wer - info.baseline_wer:+.2f} points)"
    exported = (
        f"exported: the mean of the checkpoints of steps {', '.join(map(str, info.averaged_steps))}"
        f" (best single checkpoint: step {info.best_step})"
        if info.averaged_steps
        else f"best checkpoint (exported): step {info.best_step}"
    )
    body = f"""# {info.adaptation or "Domain-adapted ASR model"}

Fine-tuned with marco-asr (Marco-ASR method: metric-driven learning-rate
control and target-profile-driven augmentation) from `{info.base_model}`
({info.family} family{", LoRA adapter merged" if info.merged_adapter else ""}).

## Training data

{data}

{info.train_utterances or 0} utterances, {info.train_hours or 0:.2f} hours.

## Training

- optimizer steps: {info.steps if info.steps is not None else "not recorded"}
- {exported}

## Word error rate (validation subset)

| | WER |
|---|---|
| baseline (before fine-tuning) | {_fmt(info.baseline_wer)} |
| this model | {_fmt(info.final_wer)}{gain} |

WER is in percent after text normalisation (English: Whisper's English
normaliser; other languages: Whisper's basic normaliser; languages without word
spaces scored per character).
"""
    return "\n".join(front) + body


def export_checkpoint(
    checkpoint: str | Path,
    output_dir: str | Path,
    baseline_wer: float | None = None,
    final_wer: float | None = None,
    steps: int | None = None,
    averaged_steps: list[int] | None = None,
) -> Path:
    from marco_contract.files import atomic_write_text
    from marco_trainer.train.checkpoint import BEST_FILE, BestInfo, replace_dir

    checkpoint = Path(checkpoint)
    if (
        not (checkpoint / "config.json").exists()
        and not (checkpoint / "adapter_config.json").exists()
    ):
        raise ValueError(f"--checkpoint {checkpoint}: not a model checkpoint (no config.json)")
    best = None
    if (checkpoint / BEST_FILE).exists():
        best = BestInfo.model_validate_json((checkpoint / BEST_FILE).read_text())
    info = ExportInfo(
        base_model=best.base_model if best else None,
        family=best.family if best else None,
        language=best.language if best else None,
        adaptation=best.adaptation if best else None,
        train_manifests=best.train_manifests if best else [],
        train_utterances=best.train_utterances if best else None,
        train_hours=best.train_hours if best else None,
        steps=steps,
        best_step=best.step if best else None,
        averaged_steps=averaged_steps,
        baseline_wer=baseline_wer,
        final_wer=final_wer if final_wer is not None else (best.wer if best else None),
        merged_adapter=(checkpoint / "adapter_config.json").exists(),
    )

    def write(folder: Path) -> None:
        if info.merged_adapter:
            from marco_trainer.models import load_asr_model

            asr = load_asr_model(str(checkpoint), family=info.family or "auto")
            asr.merged_for_export().save_pretrained(str(folder))
            asr.processor.save_pretrained(str(folder))
        else:
            for item in checkpoint.iterdir():
                if item.name in TRAINER_FILES or item.name == BEST_FILE:
                    continue
                if item.is_dir():
                    shutil.copytree(item, folder / item.name)
                else:
                    shutil.copy2(item, folder / item.name)
        atomic_write_text(folder / "README.md", model_card(info))
        atomic_write_text(folder / "marco_export.json", info.model_dump_json(indent=2))

    output = Path(output_dir)
    replace_dir(output, write)
    return output


def run_export(args: argparse.Namespace) -> int:
    from marco_trainer.runtime import quiet_transformers

    quiet_transformers()
    try:
        path = export_checkpoint(
            args.checkpoint, args.output_dir, args.baseline_wer, args.final_wer
        )
    except ValueError as error:
        raise SystemExit(f"marco-trainer export: {error}") from error
    print(f"exported {args.checkpoint} to {path}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="best checkpoint → self-contained model directory with a model card"
    )
    parser.add_argument("--checkpoint", required=True, help="e.g. TRAIN_DIR/checkpoints/best")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--baseline-wer", type=float, default=None, help="WER0, percent")
    parser.add_argument("--final-wer", type=float, default=None, help="percent")
    parser.set_defaults(func=run_export)
