"""`marco-trainer profile-report`: does the augmented set look like the target?"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "profile-report",
        help="compare an augmented set's profile with the target's (JSON + PNG per metric)",
    )
    parser.add_argument("--target", required=True, type=Path, help="profile JSON or profile dir")
    parser.add_argument("--augmented", required=True, type=Path)
    parser.add_argument("--source", type=Path)
    parser.add_argument("--output-dir", required=True, type=Path)
    parser.add_argument(
        "--threshold", type=float, default=None, help="KS distance that counts as matched"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from marco_contract.files import atomic_write_text
    from marco_trainer.audio.match import DEFAULT_THRESHOLD, compare_profiles, plot_match
    from marco_trainer.audio.profile import load_profile

    try:
        target = load_profile(args.target)
        augmented = load_profile(args.augmented)
        source = load_profile(args.source) if args.source else None
    except ValueError as error:
        print(f"marco-trainer profile-report: {error}", file=sys.stderr)
        return 2
    threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    report = compare_profiles(target, augmented, source, threshold)
    report.plots = plot_match(target, augmented, source, args.output_dir)
    atomic_write_text(Path(args.output_dir) / "match.json", report.model_dump_json(indent=2))
    for m in report.metrics:
        src = f"  (source {m.ks_source:.2f})" if m.ks_source is not None else ""
        print(f"{m.metric:12s} KS {m.ks_augmented:.2f}{src}  {'ok' if m.matched else 'MISMATCH'}")
    print(f"matched: {report.matched} -> {Path(args.output_dir) / 'match.json'}")
    return 0
