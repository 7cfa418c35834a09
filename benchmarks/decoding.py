"""Decoding policies side by side: WER, insertions, runaway hypotheses, time.

Run: ``PYTHONPATH=contract:trainer .venv/bin/python benchmarks/decoding.py
--model demo-out/data/models/whisper-tiny.en-10s --manifest demo-out/data/target/dev.jsonl
--output dev.json``

Each policy (`marco_contract.options.DecodingOptions`) transcribes the same
utterances through the code every stage uses (`marco_trainer.evaluate`), in
the same batches; the policies take turns per batch, so a change in machine
load falls on all of them alike. Per policy: corpus WER, the share of word
errors that are insertions, runaway hypotheses (more than twice the reference's
words after normalisation), seconds of decoding, and, against the first policy
(the old decoding), how many hypotheses changed and how many of those were
runaways there: a guard that only removes runaways changes no other hypothesis.

It also reports what the length bound rests on: the references' Whisper
tokens per second of audio (the bound must sit above the fastest speech), and
whether the loop cut would change a reference (it must not touch real speech).
``--output`` keeps the per-utterance results, which `dev_subset_spread.py` reads.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from marco_contract.options import DecodingOptions
from marco_contract.scoring import EditCounts
from marco_trainer.data import Example, load_examples
from marco_trainer.decoding import cut_repeats, token_budget
from marco_trainer.evaluate import score
from marco_trainer.model_audio import load_audio
from marco_trainer.models import load_asr_model
from marco_trainer.models.base import AsrModel
from marco_trainer.text import score_pair

FALLBACK = [0.2, 0.4, 0.6, 0.8, 1.0]  # Whisper's own schedule after greedy (OpenAI, HF)

#: Name -> policy. The first is the reference the others are compared with.
POLICIES: dict[str, DecodingOptions] = {
    # Every guard off: the decoding before issue 16 (the defaults are now guarded).
    "old (128 tokens)": DecodingOptions(
        tokens_per_second=0, max_repeats=0, temperature_fallback=[]
    ),
    "bound 8/s+10, repeats>3": DecodingOptions(
        tokens_per_second=8.0, extra_tokens=10, max_repeats=3
    ),
    "bound, repeats, fallback(cr 1.35)": DecodingOptions(
        tokens_per_second=8.0, extra_tokens=10, max_repeats=3, temperature_fallback=FALLBACK
    ),
}


def reference_rates(asr: AsrModel, examples: Sequence[Example]) -> dict[str, float]:
    """Whisper tokens per second of the references, and how many the loop cut would change."""
    tokenizer = asr.processor.tokenizer
    rates, changed = [], Counter()
    for example in examples:
        ids = tokenizer(" " + example.text.strip(), add_special_tokens=False).input_ids
        rates.append(len(ids) / max(example.duration, 1e-3))
        for limit in (1, 2, 3):
            changed[limit] += cut_repeats(ids, limit) != ids
    array = np.asarray(rates)
    return {
        "tokens_per_second_mean": round(float(array.mean()), 2),
        "tokens_per_second_p99": round(float(np.percentile(array, 99)), 2),
        "tokens_per_second_max": round(float(array.max()), 2),
        "references_over_8_per_second_plus_10": int(
            sum(
                len(tokenizer(" " + e.text.strip(), add_special_tokens=False).input_ids)
                > token_budget(e.duration, POLICIES["bound 8/s+10, repeats>3"])
                for e in examples
            )
        ),
        **{f"references_changed_by_max_repeats_{k}": changed[k] for k in (1, 2, 3)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--manifest", required=True, action="append")
    parser.add_argument("--max-samples", type=int)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (steadier timing)")
    parser.add_argument("--output", type=Path, help="JSON with the per-utterance results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    every = load_examples(args.manifest, Counter())  # the references' rates: all of them
    examples = every[: args.max_samples] if args.max_samples else every
    asr = load_asr_model(args.model, family="auto", language="en", task="transcribe")
    ordered = sorted(range(len(examples)), key=lambda i: examples[i].duration)
    hypotheses: dict[str, dict[int, str]] = {name: {} for name in POLICIES}
    seconds: Counter = Counter()
    for start in range(0, len(ordered), args.batch_size):
        batch = ordered[start : start + args.batch_size]
        audios = [load_audio(examples[i].audio_filepath, asr.sampling_rate) for i in batch]
        for name, policy in POLICIES.items():
            began = time.perf_counter()
            texts = asr.transcribe(audios, policy)
            seconds[name] += time.perf_counter() - began
            hypotheses[name].update(zip(batch, texts, strict=True))
        print(f"{start + len(batch)}/{len(ordered)}", flush=True)

    first = next(iter(POLICIES))
    runaway_before = set()
    report: dict = {"utterances": len(examples), "references": reference_rates(asr, every)}
    for name in POLICIES:
        found = hypotheses[name]
        wer, _, results = score(examples, found, "en")
        totals = EditCounts()
        runaways = set()
        for index in sorted(found):
            scored = score_pair(examples[index].text, found[index], "en")
            totals = totals + scored.words
            if len(scored.hypothesis.split()) > 2 * max(len(scored.reference.split()), 1):
                runaways.add(index)
        if name == first:
            runaway_before = runaways
        changed = {i for i in found if found[i] != hypotheses[first][i]}
        report[name] = {
            "wer": round(wer, 2),
            "insertion_share": round(100 * totals.insertions / max(totals.errors, 1), 1),
            "substitutions": totals.substitutions,
            "deletions": totals.deletions,
            "insertions": totals.insertions,
            "runaways": len(runaways),
            "decode_seconds": round(seconds[name], 1),
            "changed": len(changed),
            "changed_that_were_runaways": len(changed & runaway_before),
            "per_utterance": [
                {"errors": r.word_errors, "words": r.reference_words, "hypothesis": r.hypothesis}
                for r in results
            ],
        }
    summary = {
        name: {k: v for k, v in row.items() if k != "per_utterance"}
        for name, row in report.items()
        if isinstance(row, dict) and name in POLICIES
    }
    print(json.dumps({"references": report["references"], **summary}, indent=2))
    if args.output:
        args.output.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
