"""`marco-trainer filter`: keep the lines a model can learn from, reject the rest with a reason."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import Counter
from pathlib import Path

from marco_contract.exit_codes import BAD_INPUT


def register(subparsers: argparse._SubParsersAction) -> None:
    from marco_contract.argv import add_arguments
    from marco_contract.options import VolumeOptions
    from marco_trainer.audio.filtering import FilterRules

    parser = subparsers.add_parser(
        "filter",
        help="drop unreadable, out-of-bounds, over-long and duplicate lines",
        description="Writes kept.jsonl and rejects.jsonl (each reject with its reason).",
    )
    parser.add_argument(
        "--manifest",
        required=True,
        type=Path,
        action="append",
        help=".jsonl or dir of .jsonl (repeat for several)",
    )
    parser.add_argument("--output-dir", required=True, type=Path)
    add_arguments(parser, FilterRules)  # the bounds: flags, defaults and help from the model
    add_arguments(parser, VolumeOptions)  # --data-root, --output-root: where it may read
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os

    from tqdm import tqdm

    from marco_contract.argv import parse_options
    from marco_contract.files import atomic_write_text
    from marco_contract.formats import StageResult, Utterance
    from marco_contract.layout import KEPT_MANIFEST
    from marco_contract.manifests import SOURCE_KEY, ManifestProblems, Volumes
    from marco_contract.options import VolumeOptions
    from marco_contract.results import write_stage_result
    from marco_trainer.audio.filtering import FilterRules, judge
    from marco_trainer.audio.inputs import iter_sources_of_manifests
    from marco_trainer.audio.io import AudioInfo, AudioRejected, check_signal, probe, read_audio

    try:
        rules = parse_options(FilterRules, args)
        where = parse_options(VolumeOptions, args)
        problems = ManifestProblems()
        volumes = Volumes.of(where.data_root, where.output_root)
        sources = list(iter_sources_of_manifests(list(args.manifest), problems, volumes))
    except ValueError as error:
        print(f"marco-trainer filter: {error}", file=sys.stderr)
        return BAD_INPUT
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    here = out.resolve()

    def line(key: str, utterance: Utterance, **extra: object) -> str:
        data = utterance.model_dump(exclude_none=True)
        data["audio_filepath"] = os.path.relpath(Path(utterance.audio_filepath).resolve(), here)
        data[SOURCE_KEY] = key
        data.update(extra)
        return json.dumps(data, ensure_ascii=False) + "\n"

    def too_long(info: AudioInfo) -> tuple[str, str] | None:
        """Over-long by its header: refused before decoding, which would hold the whole
        file in memory to reject it (3 hours of 48 kHz stereo: 4 GB of float32, about
        12 GB at the peak with the copies). The decoded duration is judged again below."""
        if info.duration > rules.max_duration:
            return "too_long", f"{info.duration:.2f} s > {rules.max_duration} s (header)"
        return None

    kept: list[str] = []
    rejects: list[str] = []
    counts: Counter[str] = Counter()
    seen_paths: set[Path] = set()
    seen_audio: dict[str, str] = {}
    for source in tqdm(sources, desc="filter", unit="utt", file=sys.stderr):
        utterance = source.utterance
        assert utterance is not None  # a manifest's sources carry their line
        path = Path(utterance.audio_filepath).resolve()
        verdict: tuple[str, str] | None = None
        duration = utterance.duration
        if path in seen_paths:
            verdict = ("duplicate_path", str(path))
        else:
            seen_paths.add(path)
            try:
                verdict = too_long(probe(path))
                if verdict is None:
                    data, info = read_audio(path)
                    check_signal(data, path, info.sample_rate)
                    duration = info.duration
                    digest = hashlib.sha256(
                        data.tobytes() + str(info.sample_rate).encode()
                    ).hexdigest()
                    if digest in seen_audio:
                        verdict = ("duplicate_audio", f"same samples as {seen_audio[digest]}")
                    else:
                        seen_audio[digest] = str(path)
                        verdict = judge(utterance.text, duration, rules)
            except AudioRejected as rejected:
                verdict = (rejected.reason, rejected.detail)
        if verdict is None:
            # Kept means judged, and judging needed the duration measured from the audio.
            assert duration is not None
            kept.append(line(source.key, utterance, duration=round(duration, 4)))
        else:
            rejects.append(line(source.key, utterance, reason=verdict[0], detail=verdict[1]))
            counts[f"rejected:{verdict[0]}"] += 1
    # Lines that named no usable utterance (malformed, or audio outside the volume).
    for reason, number, detail in problems.entries():
        rejects.append(json.dumps({"line": number, "reason": reason, "detail": detail}) + "\n")
        counts[f"rejected:{reason}"] += 1
    atomic_write_text(out / KEPT_MANIFEST, "".join(kept))
    atomic_write_text(out / "rejects.jsonl", "".join(rejects))
    counts["kept"] = len(kept)
    counts["rejected"] = len(rejects)
    message = None
    if not kept:
        # Nothing to train on: fail here, not at train hours later.
        reasons = ", ".join(
            f"{key.removeprefix('rejected:')} {n}"
            for key, n in sorted(counts.items())
            if key.startswith("rejected:")
        )
        message = f"no utterance kept: {len(rejects)} rejected ({reasons or 'no manifest line'})"
    write_stage_result(
        StageResult(
            stage="filter", ok=bool(kept), counts=dict(sorted(counts.items())), message=message
        ),
        out,
    )
    print(f"filter: kept {len(kept)}, rejected {len(rejects)} -> {out}", file=sys.stderr)
    if message is not None:
        print(f"marco-trainer filter: {message}", file=sys.stderr)  # the last line: the reason
        return 1
    return 0
