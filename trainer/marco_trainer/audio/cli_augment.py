"""`marco-trainer augment`: the synthesis phase (paper §3, Eq. 3), sharded and resumable.

Resumption: every finished output is appended to a per-shard journal (a hidden
JSONL file, one flushed line per output, written after the audio file was
renamed into place). A rerun reads the journal and skips every output whose
line is there and whose audio exists; a torn last line is ignored. The
per-shard manifest is rebuilt from the journal at the end, so it only ever
lists finished outputs.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, cast

from marco_contract.exit_codes import BAD_INPUT

if TYPE_CHECKING:
    import numpy as np

    from marco_contract.formats import StageResult
    from marco_trainer.audio.assets import Assets
    from marco_trainer.audio.codec_calibration import CodecCalibration
    from marco_trainer.audio.eq_calibration import EqCalibration
    from marco_trainer.audio.inputs import Source
    from marco_trainer.audio.params import ChainParams, NoiseKind
    from marco_trainer.audio.profile import Profile
    from marco_trainer.audio.snr_calibration import SnrCalibration

OUTPUT_SUBTYPE = "PCM_16"


def register(subparsers: argparse._SubParsersAction) -> None:
    from marco_contract.argv import add_arguments
    from marco_contract.options import AugmentOptions, VolumeOptions

    parser = subparsers.add_parser(
        "augment",
        help="turn clean audio into target-like audio (profile-driven or a preset)",
        description=(
            "x_aug = F_filt ∘ F_lufs ∘ F_noise ∘ F_rev ∘ R (x), parameters drawn per output "
            "utterance from a target profile (or the telephony preset) and logged in its "
            "manifest line."
        ),
    )
    parser.add_argument(
        "--manifest",
        required=True,
        type=Path,
        action="append",
        help=".jsonl or dir of .jsonl (repeat for several)",
    )
    parser.add_argument("--output-dir", required=True, type=Path)
    add_arguments(parser, VolumeOptions)  # --data-root, --output-root: where it may read
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--profile", type=Path, help="profile JSON, or a profile output dir")
    source.add_argument("--preset", choices=["telephony"])
    add_arguments(parser, AugmentOptions)  # --copies, --seed, --rooms: the spec's augmentation
    parser.add_argument("--target-sample-rate", type=int, default=16000, help="the model's rate")
    parser.add_argument("--rir-dir", type=Path, help="room impulse responses (default: simulated)")
    parser.add_argument(
        "--noise-dir",
        type=Path,
        help="noise recordings (default: the profile's harvested noise, else coloured noise)",
    )
    parser.add_argument("--keep-original", action="store_true", help="also list the source lines")
    from marco_trainer.sharding import add_shard_arguments

    add_shard_arguments(parser)
    parser.set_defaults(func=run)


#: Noise made to a target's noise-floor spectrum: clips per run, and their length.
SHAPED_NOISE_CLIPS = 4
SHAPED_NOISE_SECONDS = 30.0


def noise_kind(source: str) -> NoiseKind:
    """How a line logs its noise: the target's own (harvested, spectrum), source talkers
    (babble) or a user's file."""
    if source in ("harvested", "spectrum", "babble"):
        return cast("NoiseKind", source)
    return "file"


def harvested_noise_dir(profile: Path, seconds: float) -> Path | None:
    """The noise the profile stage harvested, next to its profile.json, when there is
    enough of it (``harvest.MIN_HARVEST_SECONDS``) to draw varied stretches from."""
    from marco_trainer.audio.harvest import MIN_HARVEST_SECONDS, NOISE_DIR

    directory = (profile if profile.is_dir() else profile.parent) / NOISE_DIR
    if seconds < MIN_HARVEST_SECONDS or not directory.is_dir():
        return None
    return directory


def output_name(key: str, copy: int) -> str:
    digest = hashlib.sha1(key.encode()).hexdigest()
    stem = Path(key).stem or "audio"
    return f"audio/{digest[:2]}/{stem}-{digest[:10]}-{copy}.wav"


def read_journal(path: Path) -> dict[tuple[str, int], dict]:
    """Finished outputs by (source key, copy); copy -1 is a refused source."""
    done: dict[tuple[str, int], dict] = {}
    if not path.exists():
        return done
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
            done[(record["key"], int(record["copy"]))] = record
        except (ValueError, KeyError, TypeError):
            continue  # a line torn by a kill: that output is redone
    return done


def _encode_wav(audio: np.ndarray, sample_rate: int) -> bytes:
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, audio, sample_rate, subtype=OUTPUT_SUBTYPE, format="WAV")
    return buffer.getvalue()


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from marco_contract.argv import parse_options
    from marco_contract.files import atomic_write_bytes, atomic_write_text
    from marco_contract.formats import StageResult
    from marco_contract.manifests import ManifestProblems, Volumes
    from marco_contract.options import AugmentOptions, VolumeOptions
    from marco_contract.results import write_stage_result
    from marco_trainer.audio.assets import RT60_RANGE, Assets, cached_rooms, load_directory
    from marco_trainer.audio.babble import babble_bank
    from marco_trainer.audio.chain import apply_chain
    from marco_trainer.audio.inputs import iter_sources_of_manifests
    from marco_trainer.audio.io import AudioRejected, load_mono
    from marco_trainer.audio.noise_floor import shaped_noise
    from marco_trainer.audio.params import (
        draw_params,
        room_rt60_range,
        utterance_rng,
    )
    from marco_trainer.audio.profile import load_profile, without_measured_channel
    from marco_trainer.audio.telephony import TelephonyParams, apply_telephony, draw_telephony
    from marco_trainer.sharding import shard_from_args

    try:
        parse_options(AugmentOptions, args)  # the spec's bounds on --copies and --seed
        where = parse_options(VolumeOptions, args)
    except ValueError as error:
        print(f"marco-trainer augment: {error}", file=sys.stderr)
        return BAD_INPUT
    if args.speed_factors and not args.profile:
        print("marco-trainer augment: --speed-factors: the profile chain only (--profile), "
              "not the telephony preset", file=sys.stderr)  # fmt: skip
        return BAD_INPUT
    if args.babble_talkers and not args.profile:
        print("marco-trainer augment: --babble-talkers: the profile chain only (--profile), "
              "not the telephony preset", file=sys.stderr)  # fmt: skip
        return BAD_INPUT
    if args.babble_talkers and args.noise_dir:
        print("marco-trainer augment: --babble-talkers and --noise-dir both name the noise: "
              "give one", file=sys.stderr)  # fmt: skip
        return BAD_INPUT
    shard = shard_from_args(args.shard_index, args.num_shards)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rate = args.target_sample_rate
    problems = ManifestProblems(drop_duplicates=True)  # a repeated line: augmented once
    volumes = Volumes.of(where.data_root, where.output_root)
    try:
        all_sources = list(iter_sources_of_manifests(args.manifest, problems, volumes))
        sources = shard.select(all_sources)
        profile = load_profile(args.profile) if args.profile else None
        if profile is not None and not args.channel_from_target:
            profile = without_measured_channel(profile)
        assets = Assets(sample_rate=rate, noise_seed=args.seed)
        if profile is not None:
            if args.rir_dir:
                assets.rirs, assets.rir_source = (
                    load_directory(args.rir_dir, rate, volumes),
                    str(args.rir_dir),
                )
            elif args.rooms > 0:
                measured = room_rt60_range(profile)
                assets.rirs, assets.rir_rt60s = cached_rooms(
                    out / "rirs",
                    args.rooms,
                    rate,
                    args.seed,
                    measured or RT60_RANGE,
                    full_tail=measured is not None,
                )
                assets.rir_source = "simulated" if measured is None else "simulated, measured RT60"
            harvested = harvested_noise_dir(args.profile, profile.noise_seconds)
            if args.babble_talkers:
                # From the whole list, not the shard's: every shard mixes the same bank.
                assets.noises = babble_bank(all_sources, rate, args.babble_talkers, args.seed)
                assets.noise_source = "babble"
            elif args.noise_dir:
                assets.noises = load_directory(args.noise_dir, rate, volumes)
                assets.noise_source = str(args.noise_dir)
            elif harvested is not None:
                # The target's own noise, when the profile kept enough of it.
                assets.noises = load_directory(harvested, rate)
                assets.noise_source = "harvested"
            elif profile.noise_spectrum is not None:
                # No pauses to harvest (an engine that never stops): noise made to the
                # spectrum of the target's noise floor instead of 1/f^β noise.
                levels, length = profile.noise_spectrum.levels_db, int(SHAPED_NOISE_SECONDS * rate)
                assets.noises = [
                    shaped_noise(levels, length, rate, seed=args.seed * 101 + k)
                    for k in range(SHAPED_NOISE_CLIPS)
                ]
                assets.noise_source = "spectrum"
    except ValueError as error:
        print(f"marco-trainer augment: {error}", file=sys.stderr)
        return BAD_INPUT

    mp3 = None
    if profile is not None and args.channel_from_target:
        # Every shard chooses the same level: from the same utterances of the whole list.
        mp3 = _calibrate_mp3(all_sources, profile)
        if mp3 is not None:
            print(f"augment: MP3 calibration {mp3}", file=sys.stderr)

    # The profile chain's draw, one for the calibration and the copies: the same arguments.
    draw = None
    if profile is not None:
        draw = partial(
            draw_params,
            profile,
            output_rate=rate,
            num_rirs=len(assets.rirs),
            num_noises=len(assets.noises),
            noise_source=noise_kind(assets.noise_source),
            rir_rt60s=assets.rir_rt60s,
            speed_factors=args.speed_factors or (),
            mp3_level=mp3.level if mp3 is not None else None,
        )
    calibration = None
    if draw is not None and profile is not None and args.channel_from_target:
        # Every shard fits the same line: from the same utterances of the whole list.
        calibration = _calibrate_snr(all_sources, draw, assets, args.seed, profile)
        print(f"augment: SNR calibration {calibration}", file=sys.stderr)
    eq = None
    if draw is not None and profile is not None and profile.channel is not None:
        # After the SNR's: the noise, mixed as the copies will have it, is in the spectrum.
        eq = _calibrate_eq(
            all_sources, partial(draw, snr_calibration=calibration), assets, args.seed, profile
        )
        if eq is not None:
            print(
                f"augment: equaliser calibration {eq.gains_db} (copies "
                f"{eq.flat_residual_db():.2f} -> {eq.residual_db():.2f} dB rms from the target)",
                file=sys.stderr,
            )

    tag = f"{shard.index:05d}-of-{shard.count:05d}"
    journal_path = out / f".manifest-{tag}.journal"
    done = read_journal(journal_path)
    counts: Counter[str] = Counter({"processed": 0, "reused": 0, "skipped": 0})
    # Every shard reads every manifest: shard 0 alone counts (and names) the lines left
    # out of them, so that the merged result counts each once.
    if shard.index == 0:
        for reason, n in problems.counts().items():
            counts[f"skipped:{reason}"] += n
            counts["skipped"] += n
        for _, _, reason in problems.entries():
            print(f"skipped {reason}", file=sys.stderr)
    lines: list[dict] = []

    def finished(key: str, copy: int) -> dict | None:
        record = done.get((key, copy))
        if record is None:
            return None
        if "line" in record and not (out / record["line"]["audio_filepath"]).exists():
            return None
        return record

    with journal_path.open("a", encoding="utf-8") as journal:

        def log(record: dict) -> None:
            journal.write(json.dumps(record, ensure_ascii=False) + "\n")
            journal.flush()

        progress = tqdm(
            sources, desc=f"augment {shard.index + 1}/{shard.count}", unit="utt", file=sys.stderr
        )
        for source in progress:
            # A refusal recorded earlier is not retried; copies finished before it stay.
            refused = finished(source.key, -1)
            base = source.utterance.model_dump(exclude_none=True) if source.utterance else {}
            audio = None
            if args.keep_original:
                original = dict(
                    base, audio_filepath=os.path.relpath(source.path.resolve(), out.resolve())
                )
                original["augmentation"] = None
            for copy in range(args.copies):
                record = finished(source.key, copy)
                if record is not None:
                    counts["reused"] += 1
                    lines.append(record["line"])
                    continue
                if refused is not None:
                    break
                params: ChainParams | TelephonyParams
                try:
                    if audio is None:
                        audio, info = load_mono(source.path)
                    rng = utterance_rng(args.seed, source.key, copy)
                    if draw is not None:
                        params = draw(
                            rng,
                            snr_calibration=calibration,
                            eq_gains_db=eq.gains_db if eq is not None else None,
                        )
                        augmented, out_rate, params = apply_chain(
                            audio, info.sample_rate, params, assets
                        )
                    else:
                        phone = draw_telephony(rng, rate)
                        augmented, out_rate = apply_telephony(audio, info.sample_rate, phone)
                        params = phone
                except Exception as error:  # one bad source must not end the shard
                    reason, detail = (
                        (error.reason, error.detail)
                        if isinstance(error, AudioRejected)
                        else ("processing_error", f"{source.path}: {type(error).__name__}: {error}")
                    )
                    refused = {"key": source.key, "copy": -1, "skipped": reason, "detail": detail}
                    log(refused)
                    tqdm.write(f"skipped {reason}: {detail}", file=sys.stderr)
                    break
                augmented = np.clip(augmented, -1.0, 1.0)
                name = output_name(source.key, copy)
                atomic_write_bytes(out / name, _encode_wav(augmented, out_rate))
                line = dict(
                    base,
                    audio_filepath=name,
                    duration=round(len(augmented) / out_rate, 4),
                    source_audio_filepath=source.key,
                    augmentation=params.model_dump(mode="json"),
                )
                log({"key": source.key, "copy": copy, "line": line})
                lines.append(line)
                counts["processed"] += 1
            if refused is not None:
                counts["skipped"] += 1
                counts[f"skipped:{refused['skipped']}"] += 1
            elif args.keep_original:
                lines.append(original)

    manifest = out / f"manifest-{tag}.jsonl"
    atomic_write_text(manifest, "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines))
    counts["outputs"] = len(lines)
    counts["sources"] = len(sources)
    result = StageResult(
        stage="augment",
        counts=dict(sorted(counts.items())),
        message=f"shard {shard.index + 1}/{shard.count}: {len(lines)} lines in {manifest.name}"
        + (
            f"; SNR read = {calibration.slope:.2f} × mixed + {calibration.intercept:.2f} dB"
            + ("" if calibration.applied else " (too flat to invert: noise mixed as drawn)")
            if calibration is not None
            else ""
        )
        + (
            f"; level spread without compression {calibration.uncompressed_spread_db:.1f} dB"
            if calibration is not None and calibration.uncompressed_spread_db is not None
            else ""
        )
        + (
            f"; one equaliser for every copy: their spectrum {eq.flat_residual_db():.2f} dB "
            f"(rms over bands) from the target's flat, {eq.residual_db():.2f} dB equalised"
            if eq is not None and eq.residual_db() is not None
            else ""
        )
        + (
            f"; MP3 at level {mp3.level:g} (spectral holes "
            f"{mp3.holes[f'{mp3.level:g}']:.3f}, target {mp3.target_holes:.3f})"
            if mp3 is not None
            else ""
        ),
    )
    atomic_write_text(out / f".result-{tag}.json", result.model_dump_json())
    write_stage_result(_merge_results(out, result, shard.count), out)
    print(
        f"augment: {counts['processed']} written, {counts['reused']} reused, "
        f"{counts['skipped']} skipped -> {manifest}",
        file=sys.stderr,
    )
    return 0


def calibration_order(sources: list[Source]) -> list[Source]:
    """The sources in the order the calibrations take them: by a hash of their key.

    Not every k-th line: manifests are often written speaker by speaker in turn, and a
    stride that is a multiple of the number of speakers picks one voice only (the
    scenarios' source lists cycle four voices; strides of 8, 16 and 33 took 48, 24 and
    12 utterances of one of them). A hash order is a fixed random sample, the same in
    every shard and whatever order the lines come in."""
    return sorted(sources, key=lambda s: hashlib.sha1(s.key.encode()).hexdigest())


def _calibration_samples(sources: list[Source], count: int) -> list[tuple[Source, np.ndarray, int]]:
    """The first ``count`` readable sources of ``calibration_order``, loaded (source, audio,
    rate); unreadable ones passed over (the main loop skips and counts them)."""
    from marco_trainer.audio.io import load_mono

    samples: list[tuple[Source, np.ndarray, int]] = []
    for source in calibration_order(sources):
        if len(samples) == count:
            break
        try:
            audio, info = load_mono(source.path)
        except Exception:  # a bad file is the main loop's to skip and count
            continue
        samples.append((source, audio, info.sample_rate))
    return samples


def _calibrate_mp3(sources: list[Source], profile: Profile) -> CodecCalibration | None:
    """The MP3 level matching the target's spectral holes (``codec_calibration``), when the
    profile found MP3-coded files; else None."""
    from marco_trainer.audio.codec_calibration import CALIBRATION_UTTERANCES, calibrate_mp3

    measured = profile.channel
    if measured is None or measured.mp3_spectral_holes is None:
        return None
    samples = [(a, rate) for _, a, rate in _calibration_samples(sources, CALIBRATION_UTTERANCES)]
    return calibrate_mp3(samples, measured.mp3_spectral_holes) if samples else None


def _calibrate_snr(
    sources: list[Source],
    draw: Callable[[np.random.Generator], ChainParams],
    assets: Assets,
    seed: int,
    profile: Profile,
) -> SnrCalibration | None:
    """How the profile's SNR estimator reads this chain (``snr_calibration``), measured on
    ``CALIBRATION_UTTERANCES`` sources (``calibration_order``), each with its own first draw."""
    from marco_trainer.audio.chain import apply_chain
    from marco_trainer.audio.params import target_is_compressed, utterance_rng
    from marco_trainer.audio.snr_calibration import CALIBRATION_UTTERANCES, Mix, calibrate

    picked = _calibration_samples(sources, CALIBRATION_UTTERANCES)
    samples = [(audio, rate) for _, audio, rate in picked]
    drawn = [draw(utterance_rng(seed, source.key, 0)) for source, _, _ in picked]

    def mixer(draws: list[ChainParams]) -> Mix:
        """Sample ``index`` through ``draws[index]`` with its SNR moved by ``offset``."""

        def mix(
            index: int, audio: np.ndarray, sample_rate: int, offset: float
        ) -> tuple[np.ndarray, int, float]:
            params = draws[index]
            noise = params.noise.model_copy(update={"snr_db": params.noise.snr_db + offset})
            moved = params.model_copy(update={"noise": noise})
            out, out_rate, _ = apply_chain(audio, sample_rate, moved, assets)
            return out, out_rate, noise.snr_db

        return mix

    mix = mixer(drawn)
    uncompressed = mixer([p.model_copy(update={"compression": None}) for p in drawn])

    # The line is fitted on the chain the copies will go through: without compression
    # when what the noise leaves already explains the target's narrow spread.
    line = calibrate(samples, uncompressed, uncompressed=uncompressed)
    if line is None or not target_is_compressed(profile, line.uncompressed_spread_db):
        return line
    compressed = calibrate(samples, mix)
    spread = {"uncompressed_spread_db": line.uncompressed_spread_db}
    return compressed.model_copy(update=spread) if compressed is not None else None


def _calibrate_eq(
    sources: list[Source],
    draw: Callable[[np.random.Generator], ChainParams],
    assets: Assets,
    seed: int,
    profile: Profile,
) -> EqCalibration | None:
    """The set's equaliser (``eq_calibration``), measured on ``CALIBRATION_UTTERANCES``
    sources (``calibration_order``), each through its own first draw; None when the profile
    has no spectrum to match (nothing is loaded then)."""
    from marco_trainer.audio.chain import apply_chain
    from marco_trainer.audio.eq_calibration import CALIBRATION_UTTERANCES, calibrate_eq
    from marco_trainer.audio.params import utterance_rng

    measured = profile.channel
    if measured is None or measured.band_levels_median_db is None:
        return None  # no spectrum, or a profile written before the median was kept: flat
    picked = _calibration_samples(sources, CALIBRATION_UTTERANCES)
    drawn = [draw(utterance_rng(seed, source.key, 0)) for source, _, _ in picked]

    def run(index: int, audio: np.ndarray, rate: int, gains: list[float]) -> tuple[np.ndarray, int]:
        params = drawn[index]
        if params.channel is not None:
            line = params.channel.model_copy(update={"eq_gains_db": gains})
            params = params.model_copy(update={"channel": line})
        out, out_rate, _ = apply_chain(audio, rate, params, assets)
        return out, out_rate

    samples = [(audio, rate) for _, audio, rate in picked]
    return calibrate_eq(samples, run, measured.band_levels_median_db)


def _merge_results(out: Path, own: StageResult, num_shards: int) -> StageResult:
    """The stage result over every shard finished so far (the last one leaves the total)."""
    from marco_contract.formats import StageResult

    parts = []
    for path in sorted(out.glob(f".result-*-of-{num_shards:05d}.json")):
        try:
            parts.append(StageResult.model_validate_json(path.read_text()))
        except ValueError:
            continue
    total: Counter[str] = Counter()
    for part in parts or [own]:
        total.update(part.counts)
    return StageResult(
        stage="augment",
        counts=dict(sorted(total.items())),
        message=f"{len(parts)} shard(s) finished; last: {own.message}",
    )
