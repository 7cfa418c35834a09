"""How much one evaluation's dev WER moves with the subset it is measured on.

Run: ``python benchmarks/dev_subset_spread.py RESULTS.json [...] --policy NAME``

Reads the per-utterance results that `decoding.py --output` wrote (word errors
and reference words of each utterance under one decoding policy), pools them,
and draws subsets of 40, 60, 100 and 200 utterances (with replacement: the pool
stands for the target domain, and a subset larger than the pool is a fair
draw from it). The corpus WER of each draw is errors / words, as the trainer
computes it. The standard deviation over draws is the noise a single
evaluation of that size carries: Eq. 1's sigma, the early stop's
minImprovement and the choice of the best checkpoint all read differences of
such WERs, and a difference below about twice this s.d. is not a measurement.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def spread(errors: np.ndarray, words: np.ndarray, size: int, draws: int, seed: int) -> float:
    """S.d. (WER points) of the corpus WER of ``size`` utterances drawn from the pool."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(errors), size=(draws, size))
    wers = 100 * errors[picks].sum(axis=1) / np.maximum(words[picks].sum(axis=1), 1)
    return float(wers.std(ddof=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="+", type=Path, help="decoding.py --output files")
    parser.add_argument("--policy", default="old (128 tokens)")
    parser.add_argument("--sizes", default="40,60,100,200")
    parser.add_argument("--draws", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rows = []
    for path in args.results:
        rows += json.loads(path.read_text())[args.policy]["per_utterance"]
    errors = np.array([row["errors"] for row in rows], dtype=float)
    words = np.array([row["words"] for row in rows], dtype=float)
    print(f"pool: {len(rows)} utterances, WER {100 * errors.sum() / words.sum():.2f} %")
    print("| utterances | s.d. of the dev WER (points) |")
    print("|---:|---:|")
    for size in (int(s) for s in args.sizes.split(",")):
        print(f"| {size} | {spread(errors, words, size, args.draws, args.seed):.2f} |")


if __name__ == "__main__":
    main()
