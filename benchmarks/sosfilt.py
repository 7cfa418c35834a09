"""SOS filtering for the augmenter: scipy's private compiled loop vs ``scipy.signal.sosfilt``
vs ``torchaudio.functional.lfilter``, per call and over a whole augment run.

Run: ``PYTHONPATH=trainer:contract:demo .venv/bin/python benchmarks/sosfilt.py [--minutes 1.0]``

The chain filters every utterance twice at its channel rate (8 kHz in the demo):
F_filt (a 4th-order Butterworth: 2 sections, 4 for a band-pass) and BS.1770's
K-weighting (2 sections) to measure the loudness F_lufs sets. Until this
benchmark, ``audio/iir.py`` called scipy's private ``_sosfilt`` directly to skip
``sosfilt``'s array-API dispatch and validation (~35 µs a call); the chain now
calls the public ``scipy.signal.sosfilt``, which ends in the same compiled loop.

1. Per call, on the demo's utterance lengths at 8 kHz (shortest 1.92 s, median
   2.99 s, longest 5.61 s of its 400 training utterances), float32 as the chain
   filters: the private loop, the public function, and torchaudio's lfilter
   (one call per section; different arithmetic, so speed only).
2. The whole profile-driven chain (``draw_params`` + ``apply_chain``, as
   ``benchmarks/augment.py`` runs it) over synthesised speech, once with each
   of the two scipy entry points swapped in, taking turns; and the bytes of
   every augmented utterance compared between the two. The private loop runs
   twice, as its own control.

One process, one thread (numpy/scipy/torch pinned to 1); every time is the
fastest of many turns in which the contenders alternate (see ``best_us``).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from scipy import signal  # noqa: E402

DEMO_SECONDS = {"shortest": 1.9236, "median": 2.99, "longest": 5.605}
CHANNEL_RATE = 8000


def private_sosfilt(sos: np.ndarray, x: np.ndarray) -> np.ndarray:
    """What ``audio/iir.py`` did: scipy's compiled loop without the public wrapper
    (benchmark only: ``scipy.signal._sosfilt`` is private and may change)."""
    from scipy.signal._sosfilt import _sosfilt

    dtype = np.result_type(sos, x)
    rows = np.array(x.reshape(-1, x.shape[-1]), dtype=dtype, order="C")
    state = np.zeros((rows.shape[0], sos.shape[0], 2), dtype=dtype)
    _sosfilt(np.ascontiguousarray(sos, dtype=dtype), rows, state)
    return rows.reshape(x.shape)


SCIPY_SOSFILT = signal.sosfilt  # before whole_run swaps the module attribute


def public_sosfilt(sos: np.ndarray, x: np.ndarray) -> np.ndarray:
    return SCIPY_SOSFILT(sos, x, axis=-1)


def torchaudio_cascade(sos, x):
    import torchaudio.functional as taf

    for section in sos:
        x = taf.lfilter(x, section[3:], section[:3], clamp=False)
    return x


def best_us(fns: list[Callable[[], object]], calls: int) -> list[float]:
    """Microseconds per call of each of ``fns``: the fastest of ``calls`` single calls.

    The functions take turns call by call, and each turn starts with the next one
    (the first of a turn runs measurably slower). The minimum is the call no other
    process interrupted (this machine is shared), and turns put all under the same load.
    """
    best = [float("inf")] * len(fns)
    for turn in range(calls):
        for j in range(len(fns)):
            i = (turn + j) % len(fns)
            start = time.perf_counter()
            fns[i]()
            best[i] = min(best[i], time.perf_counter() - start)
    return [b * 1e6 for b in best]


def filters() -> dict[str, np.ndarray]:
    from marco_trainer.audio.features import k_weighting

    low = signal.butter(4, 3000.0, "lowpass", fs=CHANNEL_RATE, output="sos")
    high = signal.butter(4, 200.0, "highpass", fs=CHANNEL_RATE, output="sos")
    return {
        "K-weighting (2 sections)": k_weighting(CHANNEL_RATE).astype(np.float32),
        "low-pass (2 sections)": low.astype(np.float32),
        "band-pass (4 sections)": np.concatenate([high, low]).astype(np.float32),
    }


def per_call(rng: np.random.Generator, calls: int) -> bool:
    import torch

    print("\nper call, float32 at 8 kHz (µs; private/public: the wrapper's share)")
    print(f"  {'filter':26s} {'length':>16s} {'private':>8s} {'public':>8s} {'torchaudio':>10s}")
    identical = True
    for name, sos in filters().items():
        for label, seconds in DEMO_SECONDS.items():
            x = (0.1 * rng.standard_normal(round(seconds * CHANNEL_RATE))).astype(np.float32)
            t = torch.from_numpy(x)
            coefficients = torch.from_numpy(sos)
            same = private_sosfilt(sos, x).tobytes() == public_sosfilt(sos, x).tobytes()
            identical &= same
            times = best_us(
                [
                    partial(private_sosfilt, sos, x),
                    partial(public_sosfilt, sos, x),
                    partial(torchaudio_cascade, coefficients, t),
                ],
                calls,
            )
            print(
                f"  {name:26s} {label:>8s} {len(x):6d} smp"
                f" {times[0]:8.1f} {times[1]:8.1f} {times[2]:10.1f}"
                f"   +{times[1] - times[0]:.1f} µs ({times[1] / times[0] - 1:+.0%})"
                f"{'' if same else '  DIFFERENT OUTPUT'}"
            )
    # The other dtypes and shapes the chain and the profiler pass: float64 (a
    # float64 file measured by the profiler), float32 audio through float64
    # coefficients (result_type float64, as scipy does), two channels.
    x = (0.1 * rng.standard_normal(24000)).astype(np.float32)
    sos = filters()["band-pass (4 sections)"]
    for a, b in (
        (sos.astype(np.float64), x.astype(np.float64)),
        (sos.astype(np.float64), x),
        (sos, np.stack([x, -0.5 * x])),
    ):
        identical &= private_sosfilt(a, b).tobytes() == public_sosfilt(a, b).tobytes()
    print(f"  private and public outputs byte-identical in every case: {identical}")
    return identical


def whole_run(minutes: float, repeats: int) -> bool:
    from augment import make_data  # benchmarks/augment.py: the same speech and target calls

    from marco_trainer.audio.assets import Assets, simulate_rirs
    from marco_trainer.audio.chain import apply_chain
    from marco_trainer.audio.features import measure
    from marco_trainer.audio.io import read_audio
    from marco_trainer.audio.params import draw_params, utterance_rng
    from marco_trainer.audio.profile import build_profile

    with tempfile.TemporaryDirectory() as tmp:
        utterances, targets = make_data(Path(tmp), minutes)
        profile = build_profile([measure(str(p), *read_audio(p)) for p in targets])
    assets = Assets(rirs=simulate_rirs(8, 16000, seed=0))
    seconds = sum(len(x) / rate for x, rate in utterances)
    drawn = [
        draw_params(profile, utterance_rng(0, str(i), 0), 16000, len(assets.rirs))
        for i in range(len(utterances))
    ]
    # The private loop twice: the gap between its two rows is the noise of the method.
    variants = {
        "private loop": private_sosfilt,
        "public sosfilt": public_sosfilt,
        "private (again)": private_sosfilt,
    }

    def augment(sosfilt, k: int) -> bytes:
        # Both callers (features, ops) look ``signal.sosfilt`` up at call time.
        signal.sosfilt = lambda sos, x, axis=-1: sosfilt(sos, x)
        try:
            (x, rate), p = utterances[k], drawn[k]
            return apply_chain(x, rate, p, assets)[0].tobytes()
        finally:
            signal.sosfilt = SCIPY_SOSFILT

    # The bytes of every augmented utterance, each way (this also warms the caches).
    outputs = {
        name: [augment(fn, k) for k in range(len(utterances))] for name, fn in variants.items()
    }
    identical = outputs["private loop"] == outputs["public sosfilt"] == outputs["private (again)"]
    # Per utterance, the fastest of ``repeats`` turns each way; the run is their sum.
    total = dict.fromkeys(variants, 0.0)
    for k in range(len(utterances)):
        fns = [partial(augment, fn, k) for fn in variants.values()]
        for name, us in zip(variants, best_us(fns, repeats), strict=True):
            total[name] += us / 1e6
    print(
        f"\nwhole chain (draw_params done once; apply_chain): {len(utterances)} utterances, "
        f"{seconds:.1f} s of speech, sum over utterances of the fastest of {repeats} turns"
    )
    for name, t in total.items():
        print(
            f"  {name:16s} {t:7.3f} s  {1e3 * t / len(utterances):6.2f} ms/utterance"
            f"  {seconds / t:7.1f} x real time per core"
        )
    private = (total["private loop"] + total["private (again)"]) / 2
    noise = abs(total["private loop"] - total["private (again)"]) / private
    cost = total["public sosfilt"] - private
    print(
        f"  public vs private: {cost / private:+.1%} of the run, "
        f"{1e6 * cost / len(utterances):+.0f} µs per utterance "
        f"(private vs itself: {noise:.1%})"
    )
    count = len(outputs["private loop"])
    print(f"  every augmented utterance byte-identical: {identical} ({count})")
    return identical


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=1.0, help="minutes of source speech")
    parser.add_argument("--repeats", type=int, default=20, help="turns per utterance")
    parser.add_argument("--calls", type=int, default=300, help="turns per filter and length")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    ok = per_call(np.random.default_rng(0), args.calls)
    ok &= whole_run(args.minutes, args.repeats)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
