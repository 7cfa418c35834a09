"""Training throughput: marco-trainer's loop vs Hugging Face ``Seq2SeqTrainer``.

Same model (a small random Whisper built in code, or ``--model``), same spoken
utterances (flite), same per-device batch and gradient accumulation, same
optimizer settings (AdamW, β = 0.9/0.995, constant LR), the same label token
sequences; each system featurises the audio its own way (the peer with the
processor, as a Hugging Face fine-tuning script does). In one process, one
after the other, alternating (peer, ours, peer, ours) so that neither gets the
warm caches. Throughput is training utterances per second between the end of
a warm-up step and the last step, taken from each trainer's own per-step
timestamps (our per-rank trace; a callback for the peer); evaluation and
checkpointing are excluded from both.

    python benchmarks/train.py [--steps 30] [--batch 4] [--accum 2]
    # on a GPU: a Whisper-base-sized random model, 30 s window, bf16 for both
    python benchmarks/train.py --d-model 512 --layers 6 --heads 8 --ffn 2048 \
        --window 30 --batch 16 --precision bf16

Prints both figures and the ratio (ours / peer); the target is >= 1.0 on CPU.
On a GPU it also prints each system's peak GPU memory (``max_memory_allocated``).
The speech is synthesised with flite; ``--write-data DIR`` only writes it (a
manifest with relative paths) and ``--manifest`` reuses it, for a machine
without flite.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "trainer"), str(REPO)]

SENTENCES = (
    "hello world this is a test",
    "the quick brown fox jumps over the lazy dog",
    "good morning how are you today",
    "please call me back tomorrow",
    "one two three four five six seven eight nine ten",
    "the meeting starts at nine in the morning",
    "my account number is four five six",
    "thank you for calling customer service",
)


def make_data(folder: Path, copies: int) -> Path:
    from tests.tiny_models import write_speech_manifest

    return write_speech_manifest(folder, [s for s in SENTENCES for _ in range(copies)])


def ours(
    model: str,
    manifest: Path,
    out: Path,
    steps: int,
    batch: int,
    accum: int,
    warmup: int,
    precision: str = "fp32",
    prefetch: bool | None = None,
):
    from marco_trainer.train.loop import Trainer
    from marco_trainer.train.options import TrainOptions

    opts = TrainOptions(
        model=model,
        train_manifests=[str(manifest)],
        validation_manifest=str(manifest),
        output_dir=out,
        learning_rate=1e-4,
        max_steps=steps,
        eval_every=10 * steps,
        eval_samples=1,
        per_device_batch_size=batch,
        gradient_accumulation=accum,
        metrics_port=0,
        max_new_tokens=2,
        precision=precision,
        prefetch=prefetch,
    )
    trainer = Trainer(opts)
    try:
        trainer.run()
    finally:
        trainer.close()
    lines = [json.loads(line) for line in (out / "trace" / "rank-0.jsonl").read_text().splitlines()]
    times = {line["step"]: line["time"] for line in lines}
    return (steps - warmup) * batch * accum / (times[steps] - times[warmup])


def peer(
    model: str,
    manifest: Path,
    out: Path,
    steps: int,
    batch: int,
    accum: int,
    warmup: int,
    precision: str = "fp32",
    workers: int = 0,
):
    import torch
    from transformers import (
        AutoModelForSpeechSeq2Seq,
        AutoProcessor,
        Seq2SeqTrainer,
        Seq2SeqTrainingArguments,
        TrainerCallback,
    )

    from marco_trainer.data import load_examples
    from marco_trainer.model_audio import load_audio

    examples = load_examples([manifest])
    processor = AutoProcessor.from_pretrained(model)
    network = AutoModelForSpeechSeq2Seq.from_pretrained(model, dtype=torch.float32)
    tokenizer = processor.tokenizer
    if getattr(network.generation_config, "is_multilingual", False):
        tokenizer.set_prefix_tokens(language="en", task="transcribe")  # as ours does
    start = network.config.decoder_start_token_id

    class Speech(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(examples)

        def __getitem__(self, index: int) -> dict:
            example = examples[index]
            return {"audio": load_audio(example.audio_filepath, 16000), "text": example.text}

    def collate(items: list[dict]) -> dict:
        # What a Hugging Face Whisper fine-tuning script does: the processor's features,
        # the tokenizer's ids padded with -100, the decoder start token left to the model.
        # The token sequences are the ones marco-trainer trains on.
        features = processor.feature_extractor(
            [i["audio"] for i in items], sampling_rate=16000, return_tensors="pt"
        ).input_features
        ids = tokenizer([i["text"] for i in items]).input_ids
        ids = [seq[1:] if seq and seq[0] == start else seq for seq in ids]
        labels = torch.full((len(ids), max(map(len, ids))), -100, dtype=torch.long)
        for row, seq in enumerate(ids):
            labels[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        return {"input_features": features, "labels": labels}

    # The systems must train on the same inputs: check one batch against ours.
    from marco_trainer.models.seq2seq import EncoderDecoderAsr

    sample = [Speech()[i] for i in range(min(batch, len(examples)))]
    theirs = collate(sample)
    mine = EncoderDecoderAsr(network, processor, model, "en", "transcribe").training_batch(
        [s["audio"] for s in sample], [s["text"] for s in sample]
    )
    assert torch.equal(theirs["labels"], mine["labels"]), "label tokens differ"
    assert torch.allclose(theirs["input_features"], mine["input_features"]), "features differ"

    stamps: dict[int, float] = {}

    class Stamp(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            stamps[state.global_step] = time.time()

    arguments = Seq2SeqTrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accum,
        learning_rate=1e-4,
        lr_scheduler_type="constant",
        adam_beta1=0.9,
        adam_beta2=0.995,
        weight_decay=0.0,
        max_grad_norm=1.0,
        max_steps=steps,
        logging_steps=10 * steps,
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        remove_unused_columns=False,
        dataloader_num_workers=workers,
        bf16=precision == "bf16",
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
        seed=0,
    )
    trainer = Seq2SeqTrainer(
        model=network,
        args=arguments,
        data_collator=collate,
        train_dataset=Speech(),
        callbacks=[Stamp()],
    )
    trainer.train()
    return (steps - warmup) * batch * accum / (stamps[steps] - stamps[warmup])


def timed(fn, *args, **kwargs) -> tuple[float, float | None]:
    """Samples/s of one run, and its peak GPU memory in GiB (None on CPU)."""
    import gc

    import torch

    gc.collect()
    if not torch.cuda.is_available():
        return fn(*args, **kwargs), None
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    rate = fn(*args, **kwargs)
    return rate, torch.cuda.max_memory_allocated() / 2**30


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model dir (default: a small random Whisper)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--accum", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--copies", type=int, default=4, help="copies of each sentence")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    size = parser.add_argument_group("the random Whisper (when no --model)")
    size.add_argument("--d-model", type=int, default=128)
    size.add_argument("--layers", type=int, default=2, help="encoder and decoder layers each")
    size.add_argument("--heads", type=int, default=2)
    size.add_argument("--ffn", type=int, default=None, help="FFN width (default 2 x d-model)")
    size.add_argument("--window", type=int, default=10, help="encoder window in seconds")
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default="fp32",
        help="both systems: fp32, or bf16 autocast (Trainer's bf16=True)",
    )
    parser.add_argument(
        "--peer-workers",
        type=int,
        default=0,
        help="Seq2SeqTrainer's dataloader_num_workers (marco-trainer prefetches in a thread)",
    )
    parser.add_argument("--manifest", type=Path, default=None, help="reuse data written earlier")
    parser.add_argument("--write-data", type=Path, default=None, help="only write the data")
    parser.add_argument(
        "--also-other-prefetch",
        action="store_true",
        help="also time marco-trainer with its background data thread the other way "
        "from its default (on with a GPU, off on CPU)",
    )
    args = parser.parse_args()
    if args.write_data is not None:
        print(make_data(args.write_data.resolve(), args.copies))
        return 0

    from marco_trainer.runtime import quiet_transformers

    quiet_transformers()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        manifest = args.manifest or make_data(work / "data", args.copies)
        model = args.model
        described = model
        if model is None:
            from tests.tiny_models import build_tiny_whisper

            model = str(
                build_tiny_whisper(
                    work / "model",
                    SENTENCES,
                    d_model=args.d_model,
                    layers=args.layers,
                    heads=args.heads,
                    ffn_dim=args.ffn,
                    chunk_seconds=args.window,
                )
            )
            described = (
                f"random Whisper d_model {args.d_model}, {args.layers}+{args.layers} layers, "
                f"{args.heads} heads, FFN {args.ffn or 2 * args.d_model}, {args.window} s window"
            )
        systems = [
            ("Seq2SeqTrainer", partial(peer, workers=args.peer_workers)),
            ("marco-trainer", ours),
        ]
        if args.also_other_prefetch:
            flipped = not torch.cuda.is_available()
            systems.append(
                (f"marco-prefetch-{'on' if flipped else 'off'}", partial(ours, prefetch=flipped))
            )
        rates: dict[str, list[float]] = {name: [] for name, _ in systems}
        memory: dict[str, list[float]] = {name: [] for name, _ in systems}
        for round_ in range(args.rounds):
            for name, fn in systems:
                rate, peak = timed(
                    fn,
                    model,
                    manifest,
                    work / f"{name}-{round_}",
                    args.steps,
                    args.batch,
                    args.accum,
                    args.warmup,
                    precision=args.precision,
                )
                rates[name].append(rate)
                shown = f", peak GPU memory {peak:.2f} GiB" if peak is not None else ""
                if peak is not None:
                    memory[name].append(peak)
                print(f"round {round_ + 1}: {name:15s} {rate:7.2f} samples/s{shown}", flush=True)
    if torch.cuda.is_available():
        device = f"{torch.cuda.get_device_name()} ({args.precision})"
    else:
        device = f"cpu ({torch.get_num_threads()} threads, {args.precision})"
    print(
        f"\nmodel {described}, batch {args.batch} x accumulation {args.accum}, "
        f"{args.steps} steps, {device}"
    )
    for name, _ in systems:
        line = f"{name:18s}: {statistics.median(rates[name]):8.2f} samples/s"
        if memory[name]:
            line += f", peak GPU memory {max(memory[name]):.2f} GiB"
        print(line + f" (median of {args.rounds})")
    ours_rate = statistics.median(rates["marco-trainer"])
    peer_rate = statistics.median(rates["Seq2SeqTrainer"])
    print(f"ratio marco-trainer / Seq2SeqTrainer = {ours_rate / peer_rate:.2f}")
    if memory["marco-trainer"]:
        ratio = max(memory["marco-trainer"]) / max(memory["Seq2SeqTrainer"])
        print(f"peak GPU memory ratio marco-trainer / Seq2SeqTrainer = {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
