"""`marco-trainer profile`: measure a corpus (analysis phase, paper §3), sharded."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from marco_contract.exit_codes import BAD_INPUT


def register(subparsers: argparse._SubParsersAction) -> None:
    from marco_contract.argv import add_arguments
    from marco_contract.options import VolumeOptions

    parser = subparsers.add_parser(
        "profile",
        help="measure target-domain audio into a profile JSON",
        description=(
            "Per file: sample rate, bit depth, channels, duration, blind SNR, LUFS, mean "
            "spectral centroid and rolloff, level spread, codec and band; summarised as a "
            "profile. Non-speech stretches are kept as noise in --output-dir/noise. Each "
            "shard writes its partial into --output-dir; load_profile(DIR) merges them."
        ),
    )
    parser.add_argument(
        "--input", required=True, type=Path, help="audio dir, .jsonl, or dir of .jsonl"
    )
    parser.add_argument("--output-dir", required=True, type=Path)
    add_arguments(parser, VolumeOptions)  # --data-root, --output-root: where it may read
    from marco_trainer.sharding import add_shard_arguments

    add_shard_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import io

    import numpy as np
    import soundfile as sf
    from tqdm import tqdm

    from marco_contract.argv import parse_options
    from marco_contract.files import atomic_write_bytes, atomic_write_text
    from marco_contract.formats import StageResult
    from marco_contract.manifests import ManifestProblems, Volumes
    from marco_contract.options import VolumeOptions
    from marco_contract.results import write_stage_result
    from marco_trainer.audio import profile as profiles
    from marco_trainer.audio.features import measure
    from marco_trainer.audio.harvest import MAX_HARVEST_SECONDS, NOISE_DIR, bank, harvest
    from marco_trainer.audio.inputs import gather_sources
    from marco_trainer.audio.io import AudioRejected, check_signal, downmix, read_audio
    from marco_trainer.sharding import shard_from_args

    shard = shard_from_args(args.shard_index, args.num_shards)
    problems = ManifestProblems(drop_duplicates=True)  # a repeated line: measured once
    try:
        where = parse_options(VolumeOptions, args)
        volumes = Volumes.of(where.data_root, where.output_root)
        sources = shard.select(gather_sources(args.input, problems, volumes))
    except ValueError as error:
        print(f"marco-trainer profile: {error}", file=sys.stderr)
        return BAD_INPUT
    # Every shard reads every manifest: shard 0 alone counts (and names) the lines left
    # out of them, so that the merged profile counts each once.
    skipped: Counter[str] = Counter(problems.counts() if shard.index == 0 else ())
    if shard.index == 0:
        for _, _, reason in problems.entries():
            print(f"skipped {reason}", file=sys.stderr)
    records = []
    noise: dict[int, list[np.ndarray]] = {}  # harvested non-speech, per sample rate
    kept = 0.0
    label = f"profile {shard.index + 1}/{shard.count}"
    for source in tqdm(sources, desc=label, unit="file", file=sys.stderr):
        try:
            data, info = read_audio(source.path)
            check_signal(data, source.path, info.sample_rate)
            mono = downmix(data)
            record = measure(source.key, data, info)
            found = harvest(mono, info.sample_rate) if kept < MAX_HARVEST_SECONDS else mono[:0]
            record.noise_seconds = len(found) / info.sample_rate
            if len(found):
                noise.setdefault(info.sample_rate, []).append(found)
                kept += record.noise_seconds
            records.append(record)
        except AudioRejected as rejected:
            skipped[rejected.reason] += 1
            tqdm.write(f"skipped {rejected}", file=sys.stderr)
        except Exception as error:  # one file we cannot process must not end the shard
            skipped["processing_error"] += 1
            tqdm.write(f"skipped {source.path}: {type(error).__name__}: {error}", file=sys.stderr)

    out = Path(args.output_dir)
    for rate, pieces in noise.items():
        (out / NOISE_DIR).mkdir(parents=True, exist_ok=True)
        name = f"noise-{shard.index:05d}-of-{shard.count:05d}-{rate}.wav"
        buffer = io.BytesIO()
        sf.write(buffer, bank(pieces, rate), rate, format="WAV", subtype="FLOAT")
        atomic_write_bytes(out / NOISE_DIR / name, buffer.getvalue())
    profiles.write_shard(
        out,
        profiles.ProfileShard(
            shard_index=shard.index, num_shards=shard.count, records=records, skipped=dict(skipped)
        ),
    )
    # Whoever finishes last (or the only shard) also leaves the merged profile.
    try:
        shards = profiles.read_shards(out)
    except ValueError:
        shards = []
    finished = len(shards) == shard.count
    message = f"{shard.index + 1} of {shard.count} shards measured"
    merged = None
    if finished:
        merged = profiles.merge_shards(shards) if any(s.records for s in shards) else None
        if merged is not None:
            atomic_write_text(out / profiles.PROFILE_FILE, merged.model_dump_json(indent=1))
        message = "all shards measured" if merged else "no file could be measured"
    counted = (
        shards
        if finished
        else [
            profiles.ProfileShard(
                shard_index=shard.index,
                num_shards=shard.count,
                records=records,
                skipped=dict(skipped),
            )
        ]
    )
    total_skipped: Counter[str] = Counter()
    for part in counted:
        total_skipped.update(part.skipped)
    counts = {
        "processed": sum(len(s.records) for s in counted),
        "skipped": sum(total_skipped.values()),
    }
    counts.update({f"skipped:{reason}": n for reason, n in sorted(total_skipped.items())})
    ok = not (finished and merged is None)
    write_stage_result(StageResult(stage="profile", ok=ok, counts=counts, message=message), out)
    print(
        f"profile: {counts['processed']} measured, {counts['skipped']} skipped -> {out}",
        file=sys.stderr,
    )
    return 0 if ok else 1
