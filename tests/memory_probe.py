"""Measure the memory of real training steps on CPU, in a process of its own.

    python -m tests.memory_probe MODEL --family F --batch N [--lora]

prints one JSON object: `peak` (bytes), what the training steps took at their peak
on top of the loaded model, plus the model's fp32 weights; `weights`, `text_tokens`.

What it counts: the process's resident memory (Linux VmHWM, its peak, reset through
/proc/self/clear_refs just before the steps) minus the resident memory just before,
when the model is loaded and one forward/backward pass has initialised the kernels
(then its gradients are dropped). glibc is told to map every allocation above 64 KiB
on its own (MALLOC_MMAP_THRESHOLD_, set by the caller), so that a freed tensor leaves
the resident set and the peak is that of the live tensors, not of a heap that never
shrinks. Added back: the weights, counted from the live model's tensors, which were
resident before the reset. The steps are those of the trainer's loop (its model
loader, its batch builder, its loss, fused AdamW): two optimizer steps of two
micro-batches each, so that the second step's second micro-batch runs with the
gradients and AdamW's moments already allocated, as every later step does.
"""

from __future__ import annotations

import argparse
import gc
import json
from pathlib import Path


def _resident(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--family", required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--lora", action="store_true")
    parser.add_argument("--bf16", action="store_true", help="autocast to bf16, as the trainer")
    args = parser.parse_args()

    import numpy as np
    import torch

    from marco_contract.options import LoraOptions
    from marco_trainer.models.base import IGNORE_INDEX
    from marco_trainer.models.loading import load_asr_model

    torch.manual_seed(0)
    torch.set_num_threads(1)  # one thread's scratch buffers, on a shared machine
    asr = load_asr_model(
        args.model, family=args.family, lora=LoraOptions() if args.lora else None, trainable=True
    )
    asr.model.train()
    if args.bf16:
        asr.autocast_dtype = torch.bfloat16  # what the loop sets for precision bf16
    rng = np.random.default_rng(0)
    seconds = 2.0
    audios = [
        rng.normal(0, 0.1, int(seconds * asr.sampling_rate)).astype(np.float32)
        for _ in range(args.batch)
    ]
    texts = ["please call me back tomorrow"] * args.batch
    batch = asr.training_batch(audios, texts)
    optimizer = torch.optim.AdamW(asr.trainable_parameters(), lr=1e-5, fused=True)

    warm = asr.training_batch(audios[:1], texts[:1])
    asr.loss(asr.model, warm).backward()
    optimizer.zero_grad(set_to_none=True)
    del warm
    gc.collect()
    before = _resident("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    for _ in range(2):
        for _ in range(2):
            asr.loss(asr.model, batch).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    peak = _resident("VmHWM")
    weights = sum(p.numel() * p.element_size() for p in asr.model.parameters())
    labels = batch["labels"]
    transcript = asr.processor.tokenizer(texts[0], add_special_tokens=False).input_ids
    print(
        json.dumps(
            {
                "peak": peak - before + weights,
                "weights": weights,
                # The transcript's tokens and its end (the estimate adds the prefix).
                "text_tokens": len(transcript) + 1,
                "labels": int((labels[0] != IGNORE_INDEX).sum()),
                "label_width": int(labels.shape[1]),
                "sequence": int(batch["input_ids"].shape[1]) if "input_ids" in batch else None,
            }
        )
    )


if __name__ == "__main__":
    main()
