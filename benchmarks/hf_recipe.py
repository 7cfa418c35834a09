"""The Hugging Face fine-tuning recipe a Whisper user would write: the peer of `marco run`.

``Seq2SeqTrainer`` + ``EarlyStoppingCallback`` at a fixed learning rate
(constant schedule), validation WER every ``--eval-every`` steps on the first
``--eval-samples`` utterances of the validation manifest, best checkpoint kept
(``load_best_model_at_end``), then the test set scored by ``marco-trainer
evaluate`` like every other row. With ``--augment`` the collator passes each
training waveform through a generic audiomentations chain (:func:`generic_chain`),
as the Whisper fine-tuning tutorials do; without it the training audio is used
as it is.

Run as a script, one process per run, so that a benchmark's memory is returned
between runs and each run has its own log::

    python benchmarks/hf_recipe.py --model DIR --train-manifest M [--train-manifest M2]
        --validation-manifest DEV --test-manifest TEST --output-dir OUT
        [--max-steps 120] [--batch-size 8] [--eval-every 20] [--eval-samples 40]
        [--learning-rate 1e-5] [--patience 5] [--min-improvement 0.5] [--seed 0] [--augment]

Writes OUT/result.json: test WER, best step, steps run, the report's path.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from runs import evaluate

SAMPLE_RATE = 16000


def generic_chain(seed: int) -> Any:
    """Gaussian noise, gain, low- and high-pass, clipping: audiomentations' own defaults.

    This is the chain of the audiomentations README and the Whisper fine-tuning
    posts, not one chosen for any target: each transform fires with p = 0.5
    (0.3 for the filters and clipping, which are harsher).
    """
    import numpy as np
    from audiomentations import (
        AddGaussianNoise,
        ClippingDistortion,
        Compose,
        Gain,
        HighPassFilter,
        LowPassFilter,
    )

    np.random.seed(seed)  # audiomentations draws from numpy's global generator
    return Compose(
        [
            AddGaussianNoise(min_amplitude=0.001, max_amplitude=0.015, p=0.5),
            Gain(min_gain_db=-12.0, max_gain_db=12.0, p=0.5),
            LowPassFilter(min_cutoff_freq=2000.0, max_cutoff_freq=7500.0, p=0.3),
            HighPassFilter(min_cutoff_freq=20.0, max_cutoff_freq=400.0, p=0.3),
            ClippingDistortion(min_percentile_threshold=0, max_percentile_threshold=20, p=0.3),
        ]
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
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

    out = Path(args.output_dir)
    train = load_examples([str(m) for m in args.train_manifest])
    validation = load_examples([str(args.validation_manifest)], limit=args.eval_samples)
    processor = AutoProcessor.from_pretrained(args.model)
    network = AutoModelForSpeechSeq2Seq.from_pretrained(args.model, dtype=torch.float32)
    asr = EncoderDecoderAsr(network, processor, str(args.model), "en", "transcribe")
    chain = generic_chain(args.seed) if args.augment else None

    class Speech(torch.utils.data.Dataset):  # type: ignore[type-arg]
        def __init__(self, examples: list[Any]) -> None:
            self.examples = examples

        def __len__(self) -> int:
            return len(self.examples)

        def __getitem__(self, index: int) -> dict[str, Any]:
            example = self.examples[index]
            return {"audio": load_audio(example.audio_filepath, SAMPLE_RATE), "text": example.text}

    def collate(items: list[dict[str, Any]]) -> Any:
        audios = [np.asarray(i["audio"], dtype=np.float32) for i in items]
        if chain is not None and network.training:
            audios = [chain(samples=a, sample_rate=SAMPLE_RATE) for a in audios]
        return asr.training_batch(audios, [i["text"] for i in items])

    def compute_metrics(prediction: Any) -> dict[str, float]:
        hypotheses = processor.batch_decode(prediction.predictions, skip_special_tokens=True)
        scored = [score_pair(e.text, h, "en") for e, h in zip(validation, hypotheses, strict=True)]
        return {"wer": corpus_rates(scored)[0]}

    arguments = Seq2SeqTrainingArguments(
        output_dir=str(out / "checkpoints"),
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=8,
        gradient_accumulation_steps=1,
        learning_rate=args.learning_rate,
        lr_scheduler_type="constant",
        adam_beta1=0.9,
        adam_beta2=0.995,
        max_steps=args.max_steps,
        eval_strategy="steps",
        eval_steps=args.eval_every,
        save_strategy="steps",
        save_steps=args.eval_every,
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model="wer",
        greater_is_better=False,
        predict_with_generate=True,
        generation_max_length=128,
        report_to=[],
        remove_unused_columns=False,
        use_cpu=not torch.cuda.is_available(),
        seed=args.seed,
        dataloader_num_workers=0,
    )
    trainer = Seq2SeqTrainer(
        model=network,
        args=arguments,
        data_collator=collate,
        train_dataset=Speech(train),
        eval_dataset=Speech(validation),
        compute_metrics=compute_metrics,
        callbacks=[
            EarlyStoppingCallback(args.patience, early_stopping_threshold=args.min_improvement)
        ],
    )
    trainer.train()
    best = out / "best"
    trainer.save_model(best)
    processor.save_pretrained(best)
    test_out = out / "test"
    wer = evaluate(best, Path(args.test_manifest), test_out, in_process=True)
    result = {
        "test_wer": wer,
        "best_step": trainer.state.best_global_step,
        "steps": trainer.state.global_step,
        "run_dir": str(out),
        "report": str(test_out / "report.json"),
    }
    (out / "result.json").write_text(json.dumps(result, indent=2))
    return result


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--train-manifest", type=Path, action="append", required=True)
    p.add_argument("--validation-manifest", type=Path, required=True)
    p.add_argument("--test-manifest", type=Path, required=True)
    p.add_argument("--output-dir", type=Path, required=True)
    p.add_argument("--max-steps", type=int, default=120)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--eval-every", type=int, default=20)
    p.add_argument("--eval-samples", type=int, default=40)
    p.add_argument("--learning-rate", type=float, default=1e-5)
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--min-improvement", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--augment", action="store_true", help="the generic audiomentations chain")
    return p


if __name__ == "__main__":
    run(parser().parse_args())
