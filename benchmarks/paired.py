"""Paired differences of test WER between systems scored on the same utterances.

Two systems' corpus WERs on one test set share its hard utterances; their difference is
far steadier than either WER, and its standard error (the ratio estimator's over the
per-utterance differences, ``marco_contract.scoring.wer_change_standard_error``) says
whether a difference is more than the test set's noise. Each argument is ``LABEL=PATH``,
PATH a decoding's ``report.json`` (``evaluate/report.json`` of a ``marco run``, or the HF
rows' ``report.json`` in ``benchmarks/adaptation.py``'s work folder) or a benchmark
``row.json`` that carries its test set's ``utterance_errors`` (rows written since
6 December do: the committed rows can be paired without the runs' folders). Utterances are
matched by their audio file's name (runs in other work folders read other copies of the
same files); every report must hold the same utterances.

    python benchmarks/paired.py ft=W/runs/meeting/seed0/ft/.../evaluate/report.json \\
        ftda=.../report.json hf=W/runs/meeting/seed0/hf/report.json

Prints each system's WER and, for every pair, the difference (second − first) ± its
standard error, in percent points.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path, PurePath

from marco_contract.scoring import wer_change_standard_error


def utterance_errors(report: dict) -> dict[str, tuple[int, int]]:
    """(word errors, reference words) by audio file name, from a report or a row."""
    if "utterances" not in report:
        if "utterance_errors" not in report:
            raise ValueError("neither a report (utterances) nor a row with utterance_errors")
        return {name: (int(e), int(n)) for name, (e, n) in report["utterance_errors"].items()}
    found: dict[str, tuple[int, int]] = {}
    for line in report["utterances"]:
        name = PurePath(line["audio_filepath"]).name
        if name in found:
            raise ValueError(f"{name}: twice in one report")
        found[name] = (int(line["word_errors"]), int(line["reference_words"]))
    return found


def paired_difference(
    first: dict[str, tuple[int, int]], second: dict[str, tuple[int, int]]
) -> tuple[float, float | None]:
    """(WER of second − WER of first, its standard error), in percent points."""
    if first.keys() != second.keys():
        missing = sorted(first.keys() ^ second.keys())[:3]
        raise ValueError(f"the reports hold different utterances (e.g. {missing})")
    names = sorted(first)
    words = [first[n][1] for n in names]
    if words != [second[n][1] for n in names]:
        raise ValueError("the same utterances with different reference word counts")
    before, after = [first[n][0] for n in names], [second[n][0] for n in names]
    difference = 100 * (sum(after) - sum(before)) / sum(words)
    return difference, wer_change_standard_error(before, after, words)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("reports", nargs="+", metavar="LABEL=PATH")
    args = p.parse_args(argv)
    systems: list[tuple[str, dict[str, tuple[int, int]]]] = []
    for item in args.reports:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            p.error(f"{item!r}: LABEL=PATH")
        try:
            systems.append((label, utterance_errors(json.loads(Path(path).read_text()))))
        except ValueError as error:
            p.error(f"{path}: {error}")
    for label, errors in systems:
        wrong, words = (sum(v[i] for v in errors.values()) for i in (0, 1))
        print(f"{label}: {100 * wrong / words:.2f} % ({len(errors)} utterances)")
    for i, (a, first) in enumerate(systems):
        for b, second in systems[i + 1 :]:
            try:
                difference, se = paired_difference(first, second)
            except ValueError as error:
                print(f"{b} − {a}: {error}", file=sys.stderr)
                return 1
            shown = "n/a" if se is None else f"{se:.2f}"
            print(f"{b} − {a}: {difference:+.2f} ± {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
