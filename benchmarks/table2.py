"""The paper's Table 2 pattern on the demo data: baseline, FT, FT + DA, and a peer recipe.

Four rows, one target (the demo's phone-line call-centre test set), one model
(Whisper tiny.en with a 10 s window), one step budget:

- baseline: the pre-trained model, no training;
- FT: `marco run` on the clean source data only (augmentation and profile off);
- FT + DA: `marco run` with target-profile-driven augmentation (the demo);
- peer: Hugging Face `Seq2SeqTrainer` + `EarlyStoppingCallback` at the fixed
  initial LR, on the same FT + DA training data, the same validation subset and
  evaluation interval, best checkpoint kept (`load_best_model_at_end`).

Every row's test WER comes from `marco-trainer evaluate` (same normaliser).
Needs the demo data: run `make demo-data` first. Writes table2.json and prints
one table of target-test WER and steps-to-best.

    python benchmarks/table2.py [--data demo-out/data] [--out demo-out/table2]
                                [--max-steps N] [--rows baseline,ft,ftda,peer]
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "trainer"), str(REPO / "operator")]
MANIFEST = REPO / "examples" / "demo-local.yaml"
ROWS = ("baseline", "ft", "ftda", "peer")


def marco_trainer(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "marco_trainer", *args], check=True)


def evaluate(model: Path, test: Path, out: Path) -> float:
    marco_trainer("evaluate", "--model", str(model), "--manifest", str(test),
                  "--output-dir", str(out), "--language", "en")  # fmt: skip
    return json.loads((out / "result.json").read_text())["wer"]


def adaptation(name: str, augment: bool, max_steps: int | None) -> dict[str, Any]:
    manifest = yaml.safe_load(MANIFEST.read_text())
    manifest["metadata"]["name"] = name
    spec = manifest["spec"]
    spec["augmentation"]["enabled"] = augment
    spec["profile"] = {"enabled": augment}
    if max_steps:
        spec["training"]["maxSteps"] = max_steps
    return manifest


def marco_run(manifest: dict[str, Any], data: Path, out: Path) -> dict[str, Any]:
    path = out / f"{manifest['metadata']['name']}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(manifest))
    subprocess.run(
        [sys.executable, "-m", "marco_operator", "run", "-f", str(path), "--data-dir", str(data),
         "--output-dir", str(out)],
        check=True,
    )  # fmt: skip
    run_dir = out / "marco-asr" / manifest["metadata"]["name"]
    status = json.loads((run_dir / "status.json").read_text())
    return {
        "test_wer": status.get("finalWer"),
        "best_step": status.get("bestStep"),
        "steps": status.get("step"),
        "run_dir": str(run_dir),
    }


def peer(manifest: dict[str, Any], data: Path, ftda_dir: Path, out: Path) -> dict[str, Any]:
    """Seq2SeqTrainer + EarlyStoppingCallback on the FT + DA run's own training data."""
    import torch
    from transformers import (
        AutoModelForSpeechSeq2Seq,
        AutoProcessor,
        EarlyStoppingCallback,
        Seq2SeqTrainer,
        Seq2SeqTrainingArguments,
    )

    from marco_trainer.data import load_examples
    from marco_trainer.model_audio import load_audio
    from marco_trainer.models.seq2seq import EncoderDecoderAsr
    from marco_trainer.text import corpus_rates, score_pair

    spec = manifest["spec"]
    training = spec["training"]
    model_dir = data / Path(spec["model"]["source"]).relative_to("/data")
    train = load_examples([ftda_dir / "filter" / "kept.jsonl", ftda_dir / "augment"])
    validation = load_examples([data / spec["data"]["validation"]], limit=training["evalSamples"])
    processor = AutoProcessor.from_pretrained(model_dir)
    network = AutoModelForSpeechSeq2Seq.from_pretrained(model_dir, dtype=torch.float32)
    asr = EncoderDecoderAsr(network, processor, str(model_dir), "en", "transcribe")

    class Speech(torch.utils.data.Dataset):
        def __init__(self, examples) -> None:
            self.examples = examples

        def __len__(self) -> int:
            return len(self.examples)

        def __getitem__(self, index: int) -> dict:
            example = self.examples[index]
            return {"audio": load_audio(example.audio_filepath, 16000), "text": example.text}

    def collate(items: list[dict]) -> dict:
        return asr.training_batch([i["audio"] for i in items], [i["text"] for i in items])

    def compute_metrics(prediction) -> dict[str, float]:
        ids = prediction.predictions
        hypotheses = processor.batch_decode(ids, skip_special_tokens=True)
        scored = [score_pair(e.text, h, "en") for e, h in zip(validation, hypotheses, strict=True)]
        return {"wer": corpus_rates(scored)[0]}

    arguments = Seq2SeqTrainingArguments(
        output_dir=str(out / "peer"),
        per_device_train_batch_size=training["perDeviceBatchSize"],
        per_device_eval_batch_size=8,
        gradient_accumulation_steps=training["gradientAccumulation"],
        learning_rate=training["initialLearningRate"],
        lr_scheduler_type="constant",
        adam_beta1=0.9,
        adam_beta2=0.995,
        max_steps=training["maxSteps"],
        eval_strategy="steps",
        eval_steps=training["evalEvery"],
        save_strategy="steps",
        save_steps=training["evalEvery"],
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model="wer",
        greater_is_better=False,
        predict_with_generate=True,
        generation_max_length=128,
        report_to=[],
        remove_unused_columns=False,
        use_cpu=not torch.cuda.is_available(),
        seed=0,
    )
    patience = training["earlyStopping"]["patience"]
    threshold = training["earlyStopping"]["minImprovement"]
    trainer = Seq2SeqTrainer(
        model=network,
        args=arguments,
        data_collator=collate,
        train_dataset=Speech(train),
        eval_dataset=Speech(validation),
        compute_metrics=compute_metrics,
        callbacks=[EarlyStoppingCallback(patience, early_stopping_threshold=threshold)],
    )
    trainer.train()
    best = out / "peer" / "best"
    trainer.save_model(best)
    processor.save_pretrained(best)
    test = data / spec["data"]["test"]
    return {
        "test_wer": evaluate(best, test, out / "peer" / "test"),
        "best_step": trainer.state.best_global_step,
        "steps": trainer.state.global_step,
        "run_dir": str(out / "peer"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO / "demo-out" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "demo-out" / "table2")
    parser.add_argument("--max-steps", type=int, help="override the demo's step budget")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"subset of {','.join(ROWS)}")
    parser.add_argument(
        "--ftda-run",
        type=Path,
        help="an FT + DA run directory whose data the peer row trains on "
        "(default: this script's own ftda row, e.g. demo-out/marco-asr/demo-callcentre)",
    )
    args = parser.parse_args()
    rows = args.rows.split(",")
    if unknown := set(rows) - set(ROWS):
        parser.error(f"--rows: unknown {sorted(unknown)}")
    if not (args.data / "summary.json").exists():
        parser.error(f"--data {args.data}: no demo data; run `make demo-data` first")
    base = adaptation("table2-ftda", augment=True, max_steps=args.max_steps)
    spec = base["spec"]
    results: dict[str, dict[str, Any]] = {}
    for row in rows:
        started = time.monotonic()
        if row == "baseline":
            model = args.data / Path(spec["model"]["source"]).relative_to("/data")
            wer = evaluate(model, args.data / spec["data"]["test"], args.out / "baseline")
            results[row] = {"test_wer": wer, "best_step": None, "steps": 0}
        elif row == "ft":
            ft = adaptation("table2-ft", augment=False, max_steps=args.max_steps)
            results[row] = marco_run(ft, args.data, args.out)
        elif row == "ftda":
            results[row] = marco_run(copy.deepcopy(base), args.data, args.out)
        else:
            ftda_dir = args.ftda_run or args.out / "marco-asr" / "table2-ftda"
            if not (ftda_dir / "augment").exists():
                parser.error("the peer row trains on the FT + DA row's data: run that row too")
            results[row] = peer(base, args.data, ftda_dir, args.out)
        results[row]["seconds"] = round(time.monotonic() - started)
    (args.out / "table2.json").write_text(json.dumps(results, indent=2))
    names = {
        "baseline": "Whisper tiny.en (10 s window)",
        "ft": "+ FT, Eq. 1 (source only)",
        "ftda": "+ FT + DA, Eq. 1 (marco-asr)",
        "peer": "+ FT + DA, Seq2SeqTrainer + ES",
    }
    print(f"\n{'':34} {'test WER %':>10} {'best step':>10} {'steps':>6} {'seconds':>8}")
    for row, result in results.items():
        best = result["best_step"] if result["best_step"] is not None else "–"
        wer = result["test_wer"]
        print(f"{names[row]:34} {wer:10.2f} {best!s:>10} {result['steps']!s:>6} "
              f"{result['seconds']:8d}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
