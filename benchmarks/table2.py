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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from runs import REPO, adaptation, evaluate, marco_run, package_env

ROWS = ("baseline", "ft", "ftda", "peer")


def peer(manifest: dict[str, Any], data: Path, ftda_dir: Path, out: Path) -> dict[str, Any]:
    """Seq2SeqTrainer + EarlyStoppingCallback (hf_recipe.py) on the FT + DA run's own data."""
    spec = manifest["spec"]
    training = spec["training"]
    model_dir = data / Path(spec["model"]["source"]).relative_to("/data")
    command = [
        sys.executable, str(REPO / "benchmarks" / "hf_recipe.py"), "--model", str(model_dir),
        "--train-manifest", str(ftda_dir / "filter" / "kept.jsonl"),
        "--train-manifest", str(ftda_dir / "augment"),
        "--validation-manifest", str(data / spec["data"]["validation"]),
        "--test-manifest", str(data / spec["data"]["test"]), "--output-dir", str(out / "peer"),
        "--max-steps", str(training["maxSteps"]),
        "--batch-size", str(training["perDeviceBatchSize"] * training["gradientAccumulation"]),
        "--eval-every", str(training["evalEvery"]), "--eval-samples", str(training["evalSamples"]),
        "--learning-rate", str(training["initialLearningRate"]),
        "--patience", str(training["earlyStopping"]["patience"]),
        "--min-improvement", str(training["earlyStopping"]["minImprovement"]),
    ]  # fmt: skip
    subprocess.run(command, check=True, env=package_env())
    return dict(json.loads((out / "peer" / "result.json").read_text()))


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
    budget = {"maxSteps": args.max_steps} if args.max_steps else {}
    base = adaptation("table2-ftda", augment=True, training=budget)
    spec = base["spec"]
    results: dict[str, dict[str, Any]] = {}
    for row in rows:
        started = time.monotonic()
        if row == "baseline":
            model = args.data / Path(spec["model"]["source"]).relative_to("/data")
            wer = evaluate(model, args.data / spec["data"]["test"], args.out / "baseline")
            results[row] = {"test_wer": wer, "best_step": None, "steps": 0}
        elif row == "ft":
            ft = adaptation("table2-ft", augment=False, training=budget)
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
