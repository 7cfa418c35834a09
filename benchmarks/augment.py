"""Profile and augment throughput, side by side with audiomentations and torch-audiomentations.

Run: ``PYTHONPATH=trainer:demo .venv/bin/python benchmarks/augment.py [--minutes 1.0]``

Everything runs in one process on one core (numpy/scipy/torch threads pinned to
1), on the same synthesised speech (flite/espeak-ng, 16 kHz), against the same
telephony-like target profile (sox: 8 kHz μ-law/GSM, band-pass, white noise).
Speed is seconds of audio per CPU second (× real time per core), best of
``--repeats`` passes in which the systems take turns, and every row is printed with its ratio to us.

Chains compared, per utterance (variable lengths, so batch size 1):
- ours: draw parameters from the profile, then Eq. 3 (R at the drawn rate and
  bit depth and back, F_rev with the cached simulated RIRs, F_noise, F_lufs,
  F_filt with its cutoffs resolved against the audio);
- audiomentations: Resample 16k→8k, BitCrush 8 bit, Resample 8k→16k,
  ApplyImpulseResponse (same RIRs, as files; same p_rev), AddColorNoise (same
  SNR range), LoudnessNormalization (pyloudnorm; same LUFS range),
  HighPassFilter + LowPassFilter;
- torch-audiomentations has no resampling, bit-depth or loudness transform,
  and its ApplyImpulseResponse cannot load files with torchaudio ≥ 2.9:
  torchaudio.functional.resample down/up, rounding to 8 bits,
  torchaudio.functional.fftconvolve with the same RIRs, its AddColoredNoise,
  torchaudio.functional.loudness + gain, its HighPassFilter + LowPassFilter.
Profiling (per-file metrics) is compared with pyloudnorm (or libebur128 via
``loudness``) + librosa's spectral centroid/rolloff (+ our SNR, which neither
ships).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from marco_demo.synth import Voice, speak  # noqa: E402
from marco_trainer.audio.assets import Assets, simulate_rirs  # noqa: E402
from marco_trainer.audio.chain import apply_chain  # noqa: E402
from marco_trainer.audio.features import estimate_snr, measure  # noqa: E402
from marco_trainer.audio.io import read_audio  # noqa: E402
from marco_trainer.audio.params import draw_params, reverb_probability, utterance_rng  # noqa: E402
from marco_trainer.audio.profile import Profile, build_profile  # noqa: E402

SENTENCES = (
    "please hold while i transfer your call to the billing department",
    "your account balance is forty two dollars and seventeen cents",
    "thank you for calling customer service, how can i help you today",
    "i would like to cancel my subscription before the end of the month",
    "can you repeat the order number please, i did not catch it",
    "the technician will arrive tomorrow morning between eight and ten",
    "my internet has been down since monday and nobody called me back",
    "could you check the status of my refund, it has been two weeks",
)
VOICES = (
    Voice("flite", "kal16"),
    Voice("flite", "slt"),
    Voice("flite", "awb"),
    Voice("flite", "rms"),
    Voice("espeak-ng", "en-us"),
)


def make_data(root: Path, minutes: float) -> tuple[list[tuple[np.ndarray, int]], list[Path]]:
    utterances, total, i = [], 0.0, 0
    while total < minutes * 60:
        text, voice = SENTENCES[i % len(SENTENCES)], VOICES[i % len(VOICES)]
        path = speak(text, root / f"src{i}.wav", voice)
        x, rate = sf.read(str(path), dtype="float32")
        utterances.append((x, rate))
        total += len(x) / rate
        i += 1
    targets = []
    for j in range(6):
        clean = speak(SENTENCES[j], root / f"clean{j}.wav", VOICES[j % 5], sample_rate=8000)
        noise = root / f"noise{j}.wav"
        seconds = str(sf.info(str(clean)).duration)
        subprocess.run(
            [
                "sox",
                "-n",
                "-r",
                "8000",
                "-c",
                "1",
                "-b",
                "16",
                str(noise),
                "synth",
                seconds,
                "whitenoise",
                "vol",
                str(0.004 + 0.004 * j),
            ],
            check=True,
        )
        out = root / (f"call{j}.wav" if j % 2 == 0 else f"call{j}.gsm")
        encoding = ["-e", "u-law"] if j % 2 == 0 else []
        subprocess.run(
            [
                "sox",
                "-m",
                str(clean),
                str(noise),
                *encoding,
                "-r",
                "8000",
                str(out),
                "sinc",
                "300-3400",
                "vol",
                "0.5",
            ],
            check=True,
        )
        targets.append(out)
    return utterances, targets


def speeds(fns: list[Callable[[], None]], seconds: float, repeats: int) -> list[float]:
    """× real time per core (audio seconds per CPU second), best of ``repeats``.

    The systems take turns within each repeat, so a burst of load from other
    processes on the machine falls on all of them alike.
    """
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.process_time()
            fn()
            best[i] = min(best[i], time.process_time() - start)
    return [seconds / b for b in best]


def ours_chain(utterances, profile: Profile, assets: Assets) -> Callable[[], None]:
    def run() -> None:
        for i, (x, rate) in enumerate(utterances):
            params = draw_params(profile, utterance_rng(0, str(i), 0), 16000, len(assets.rirs))
            apply_chain(x, rate, params, assets)

    return run


def audiomentations_chain(utterances, profile: Profile, ir_dir: Path) -> Callable[[], None]:
    import audiomentations as am

    snr, lufs = profile.metric("snr_db"), profile.metric("lufs")
    down = am.Resample(min_sample_rate=8000, max_sample_rate=8000, p=1.0)
    crush = am.BitCrush(min_bit_depth=8, max_bit_depth=8, p=1.0)
    up = am.Resample(min_sample_rate=16000, max_sample_rate=16000, p=1.0)
    rest = am.Compose(
        [
            am.ApplyImpulseResponse(ir_path=str(ir_dir), p=reverb_probability(snr.mean)),
            am.AddColorNoise(
                min_snr_db=snr.percentile(5),
                max_snr_db=snr.percentile(95),
                min_f_decay=-3.0,
                max_f_decay=0.0,
                p=1.0,
            ),
            am.LoudnessNormalization(min_lufs=lufs.min, max_lufs=lufs.max, p=1.0),
            am.HighPassFilter(min_cutoff_freq=50.0, max_cutoff_freq=300.0, p=1.0),
            am.LowPassFilter(min_cutoff_freq=3000.0, max_cutoff_freq=3800.0, p=1.0),
        ]
    )

    def run() -> None:
        for x, rate in utterances:
            y = down(x, rate)
            y = crush(y, 8000)
            y = up(y, 8000)
            rest(y, 16000)

    return run


def torch_audiomentations_chain(utterances, profile: Profile, ir_dir: Path) -> Callable[[], None]:
    import torch
    import torch_audiomentations as ta
    import torchaudio.functional as taf

    torch.set_num_threads(1)
    snr, lufs = profile.metric("snr_db"), profile.metric("lufs")
    kw = {"sample_rate": 16000, "output_type": "tensor"}
    # Its ApplyImpulseResponse loads files with torchaudio.info, gone from torchaudio 2.9+;
    # the same RIRs are convolved with torchaudio.functional.fftconvolve instead.
    rirs = [torch.from_numpy(sf.read(str(p), dtype="float32")[0]) for p in sorted(ir_dir.iterdir())]
    p_rev = reverb_probability(snr.mean)
    rng = np.random.default_rng(0)

    def reverb(y):
        if rng.random() >= p_rev:
            return y
        rir = rirs[int(rng.integers(len(rirs)))]
        return taf.fftconvolve(y, rir[None, None] / rir.abs().max())[..., : y.shape[-1]]

    noise = ta.AddColoredNoise(
        min_snr_in_db=snr.percentile(5),
        max_snr_in_db=snr.percentile(95),
        min_f_decay=0.0,
        max_f_decay=1.0,
        p=1.0,
        **kw,
    )
    highpass = ta.HighPassFilter(min_cutoff_freq=50.0, max_cutoff_freq=300.0, p=1.0, **kw)
    lowpass = ta.LowPassFilter(min_cutoff_freq=3000.0, max_cutoff_freq=3800.0, p=1.0, **kw)
    tensors = [(torch.from_numpy(x)[None, None], rate) for x, rate in utterances]

    def run() -> None:
        for x, rate in tensors:
            y = taf.resample(x, rate, 8000)
            y = torch.round(y * 127) / 127
            y = taf.resample(y, 8000, 16000)
            y = noise(reverb(y))
            measured = taf.loudness(y[0], 16000)
            target = float(np.random.uniform(lufs.min, lufs.max))
            y = y * 10 ** ((target - float(measured)) / 20)
            lowpass(highpass(y))

    return run


def profile_ours(utterances) -> Callable[[], None]:
    from marco_trainer.audio.io import AudioInfo

    def run() -> None:
        for x, rate in utterances:
            measure("x", x[:, None], AudioInfo(rate, 1, len(x), "WAV", "PCM_16"))

    return run


def profile_peer(utterances) -> Callable[[], None]:
    import librosa
    import pyloudnorm

    def run() -> None:
        for x, rate in utterances:
            pyloudnorm.Meter(rate).integrated_loudness(x.astype(np.float64))
            float(np.mean(librosa.feature.spectral_centroid(y=x, sr=rate)))
            float(np.mean(librosa.feature.spectral_rolloff(y=x, sr=rate, roll_percent=0.85)))
            estimate_snr(x, rate)

    return run


def profile_peer_ebur128(utterances) -> Callable[[], None]:
    import librosa
    import loudness

    def run() -> None:
        for x, rate in utterances:
            loudness.integrated_loudness(x.astype(np.float64)[:, None], rate)
            float(np.mean(librosa.feature.spectral_centroid(y=x, sr=rate)))
            float(np.mean(librosa.feature.spectral_rolloff(y=x, sr=rate, roll_percent=0.85)))
            estimate_snr(x, rate)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=1.0, help="minutes of source speech")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        utterances, targets = make_data(root, args.minutes)
        seconds = sum(len(x) / rate for x, rate in utterances)
        profile = build_profile([measure(str(p), *read_audio(p)) for p in targets])
        rirs = simulate_rirs(8, 16000, seed=0)
        (root / "rirs").mkdir()
        for k, rir in enumerate(rirs):
            sf.write(root / "rirs" / f"rir{k}.wav", rir, 16000, subtype="FLOAT")
        assets = Assets(rirs=rirs)
        print(
            f"{len(utterances)} utterances, {seconds:.1f} s of 16 kHz speech; "
            f"target: {profile.files} telephone files; 1 thread; best of {args.repeats}"
        )

        rows = {
            "profile": [
                ("marco (features.measure)", profile_ours(utterances)),
                ("pyloudnorm + librosa", profile_peer(utterances)),
                ("libebur128 + librosa", profile_peer_ebur128(utterances)),
            ],
            "augment (full Eq. 3 chain)": [
                ("marco (params + chain)", ours_chain(utterances, profile, assets)),
                ("audiomentations", audiomentations_chain(utterances, profile, root / "rirs")),
                (
                    "torch-audiomentations",
                    torch_audiomentations_chain(utterances, profile, root / "rirs"),
                ),
            ],
        }
        for task, systems in rows.items():
            for _, fn in systems:  # warm caches and lazy imports out of the timing
                fn()
            measured = speeds([fn for _, fn in systems], seconds, args.repeats)
            results = list(zip([name for name, _ in systems], measured, strict=True))
            ours = measured[0]
            fastest_peer = max(measured[1:])
            print(f"\n{task}")
            for name, s in results:
                print(f"  {name:28s} {s:9.1f} x real time per core   ours/this = {ours / s:6.2f}")
            print(
                f"  ratio to the faster peer: {ours / fastest_peer:.2f}x "
                f"(target >= 3x{'' if task == 'profile' else ', and >= 300x real time'})"
            )


if __name__ == "__main__":
    main()
