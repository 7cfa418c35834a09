"""Integrated loudness (ITU-R BS.1770-4, LUFS): ours vs pyloudnorm vs torchaudio, per call,
in the augmenter's F_lufs, and in the target profile.

Run: ``PYTHONPATH=trainer:contract:demo .venv/bin/python benchmarks/loudness.py
[--minutes 1.0] [--targets MANIFEST_OR_DIR]``

pyloudnorm and torchaudio are declared trainer dependencies; this decides
whether either should replace ``features.integrated_loudness``:

1. Per call on the demo's utterance lengths at 8 kHz (the channel rate at which
   F_lufs measures): time, and the difference from ours in LU. Ours in float32,
   as the augmenter measures; pyloudnorm in float64 (it converts anyway);
   torchaudio on a float32 tensor.
2. F_lufs measuring with pyloudnorm instead of ours over a whole augment run
   (``draw_params`` + ``apply_chain`` over synthesised speech): the time, and
   whether the audio the stage writes (PCM 16) stays byte-identical.
3. The profile: each target file's LUFS both ways, the profile's LUFS
   statistics, and whether the loudness the augmenter then draws changes
   (``--targets``: e.g. the demo's target manifest; default: the synthesised
   telephone calls of ``benchmarks/augment.py``).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import io  # noqa: E402
import tempfile  # noqa: E402
from functools import lru_cache, partial  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
from sosfilt import CHANNEL_RATE, DEMO_SECONDS, best_us  # noqa: E402


@lru_cache(maxsize=8)
def _meter(rate: int):
    import pyloudnorm

    return pyloudnorm.Meter(rate)


def pyloudnorm_lufs(x: np.ndarray, rate: int) -> float:
    return float(_meter(rate).integrated_loudness(np.asarray(x, dtype=np.float64)))


def torchaudio_lufs(x, rate: int) -> float:
    import torchaudio.functional as taf

    return float(taf.loudness(x, rate))


def per_call(speech: np.ndarray, calls: int) -> None:
    import torch

    from marco_trainer.audio.features import integrated_loudness

    print("\nper call at 8 kHz (µs), and the difference from ours (LU)")
    print(
        f"  {'length':>16s} {'ours f32':>9s} {'pyloudnorm':>10s} {'torchaudio':>10s}"
        f"   {'Δ pyloudnorm':>12s} {'Δ torchaudio':>12s}"
    )
    for label, seconds in DEMO_SECONDS.items():
        x = np.resize(speech, round(seconds * CHANNEL_RATE)).astype(np.float32)
        t = torch.from_numpy(x)[None]
        ours = integrated_loudness(x, CHANNEL_RATE)
        peer = pyloudnorm_lufs(x, CHANNEL_RATE)
        torch_value = torchaudio_lufs(t, CHANNEL_RATE)
        times = best_us(
            [
                partial(integrated_loudness, x, CHANNEL_RATE),
                partial(pyloudnorm_lufs, x, CHANNEL_RATE),
                partial(torchaudio_lufs, t, CHANNEL_RATE),
            ],
            calls,
        )
        print(
            f"  {label:>8s} {len(x):6d} smp {times[0]:9.1f} {times[1]:10.1f} {times[2]:10.1f}"
            f"   {peer - ours:+12.2e} {torch_value - ours:+12.2e}"
        )


def written(audio: np.ndarray, rate: int) -> bytes:
    """The file the augment stage writes for ``audio`` (clipped, PCM 16 WAV)."""
    from marco_trainer.audio.cli_augment import OUTPUT_SUBTYPE

    buffer = io.BytesIO()
    sf.write(buffer, np.clip(audio, -1.0, 1.0), rate, subtype=OUTPUT_SUBTYPE, format="WAV")
    return buffer.getvalue()


def whole_run(utterances, profile, repeats: int) -> None:
    from marco_trainer.audio import ops
    from marco_trainer.audio.assets import Assets, simulate_rirs
    from marco_trainer.audio.chain import apply_chain
    from marco_trainer.audio.params import draw_params, utterance_rng

    assets = Assets(rirs=simulate_rirs(8, 16000, seed=0))
    drawn = [
        draw_params(profile, utterance_rng(0, str(i), 0), 16000, len(assets.rirs))
        for i in range(len(utterances))
    ]
    ours = ops.integrated_loudness
    variants = {"ours": ours, "pyloudnorm": pyloudnorm_lufs, "ours (again)": ours}

    def augment(measure, k: int) -> tuple[np.ndarray, int]:
        ops.integrated_loudness = measure  # gain_to_loudness looks it up at call time
        try:
            (x, rate), p = utterances[k], drawn[k]
            audio, out_rate, _ = apply_chain(x, rate, p, assets)
            return audio, out_rate
        finally:
            ops.integrated_loudness = ours

    count = len(utterances)
    outputs = {name: [augment(m, k) for k in range(count)] for name, m in variants.items()}
    floats = sum(
        a.tobytes() != b.tobytes()
        for (a, _), (b, _) in zip(outputs["ours"], outputs["pyloudnorm"], strict=True)
    )
    files = sum(
        written(*a) != written(*b)
        for a, b in zip(outputs["ours"], outputs["pyloudnorm"], strict=True)
    )
    codes = max(
        int(np.abs(np.round(a * 32767) - np.round(b * 32767)).max())
        for (a, _), (b, _) in zip(outputs["ours"], outputs["pyloudnorm"], strict=True)
    )
    total = dict.fromkeys(variants, 0.0)
    for k in range(len(utterances)):
        fns = [partial(augment, m, k) for m in variants.values()]
        for name, us in zip(variants, best_us(fns, repeats), strict=True):
            total[name] += us / 1e6
    seconds = sum(len(x) / rate for x, rate in utterances)
    print(
        f"\nF_lufs measured by each, whole chain: {len(utterances)} utterances, "
        f"{seconds:.1f} s of speech, sum of the fastest of {repeats} turns per utterance"
    )
    for name, t in total.items():
        print(f"  {name:14s} {t:7.3f} s  {1e3 * t / len(utterances):6.2f} ms/utterance")
    base = (total["ours"] + total["ours (again)"]) / 2
    print(
        f"  pyloudnorm vs ours: {total['pyloudnorm'] / base - 1:+.1%} of the run "
        f"(ours vs itself: {abs(total['ours'] - total['ours (again)']) / base:.1%})"
    )
    print(
        f"  augmented audio that changes with pyloudnorm: {floats}/{len(utterances)} "
        f"utterances (float32), {files}/{len(utterances)} written files (PCM 16), "
        f"up to {codes} PCM code(s) per sample"
    )


def profile_effect(paths: list[Path], draws: int) -> None:
    from marco_trainer.audio import features
    from marco_trainer.audio.features import measure
    from marco_trainer.audio.io import read_audio
    from marco_trainer.audio.params import draw_params, utterance_rng
    from marco_trainer.audio.profile import build_profile

    decoded = [(str(p), *read_audio(p)) for p in paths]
    ours = [measure(*d) for d in decoded]
    original = features.integrated_loudness
    features.integrated_loudness = pyloudnorm_lufs  # measure() looks it up at call time
    try:
        theirs = [measure(*d) for d in decoded]
    finally:
        features.integrated_loudness = original
    gaps = [abs(a.lufs - b.lufs) for a, b in zip(ours, theirs, strict=True)]
    profiles = build_profile(ours), build_profile(theirs)
    print(f"\nprofile of {len(paths)} target files: per-file |Δ LUFS| max {max(gaps):.2e} LU")
    for name, profile in zip(("ours", "pyloudnorm"), profiles, strict=True):
        m = profile.metric("lufs")
        print(f"  {name:11s} LUFS mean {m.mean!r} std {m.std!r} min {m.min!r} max {m.max!r}")
    changed = sum(
        draw_params(profiles[0], utterance_rng(0, str(i), 0), 16000, 8).loudness
        != draw_params(profiles[1], utterance_rng(0, str(i), 0), 16000, 8).loudness
        for i in range(draws)
    )
    print(f"  target loudness the augmenter draws: {changed}/{draws} draws change")


def target_paths(spec: Path) -> list[Path]:
    from marco_trainer.audio.inputs import gather_sources

    return [source.path for source in gather_sources(spec)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=1.0, help="minutes of source speech")
    parser.add_argument("--repeats", type=int, default=10, help="turns per utterance")
    parser.add_argument("--calls", type=int, default=100, help="turns per length")
    parser.add_argument("--targets", type=Path, help="target manifest or dir to profile")
    args = parser.parse_args()
    import torch
    from augment import make_data

    from marco_trainer.audio.features import measure
    from marco_trainer.audio.io import read_audio
    from marco_trainer.audio.ops import resample
    from marco_trainer.audio.profile import build_profile

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        utterances, targets = make_data(Path(tmp), args.minutes)
        profile = build_profile([measure(str(p), *read_audio(p)) for p in targets])
        speech = np.concatenate([x for x, _ in utterances[:4]])
        per_call(resample(speech, 16000, CHANNEL_RATE)[0], args.calls)
        whole_run(utterances, profile, args.repeats)
        paths = target_paths(args.targets) if args.targets else targets
        profile_effect(paths, draws=400)


if __name__ == "__main__":
    main()
