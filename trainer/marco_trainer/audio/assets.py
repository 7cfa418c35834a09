"""Room impulse responses and noise recordings the chain draws from.

Simulated rooms (pyroomacoustics image-source shoeboxes) are generated once per
run from the seed and cached as one ``.npz`` in the output directory, so every
shard and every resumed run convolves with the same rooms. A user's RIR or
noise directory is read once and resampled to the output rate.
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from marco_contract.files import atomic_write_bytes
from marco_contract.manifests import ManifestProblems, Volumes
from marco_trainer.audio.inputs import inside_volumes
from marco_trainer.audio.io import AudioRejected, downmix, find_audio_files, read_audio
from marco_trainer.audio.ops import coloured_noise, resample

#: Spectral slopes of the generated noise bank: 1/f^β from white (0) to pink (1).
NOISE_BETAS = (0.0, 0.25, 0.5, 0.75, 1.0)
#: Seconds of generated noise per slope; utterances take random stretches of it.
NOISE_BANK_SECONDS = 60.0
#: Reverberation times (s) of the simulated rooms, drawn uniformly.
RT60_RANGE = (0.15, 0.7)
#: Image-source order cap: keeps generation in milliseconds; late reverb past it is small.
MAX_ORDER = 20
SPEED_OF_SOUND = 343.0


@dataclass
class Assets:
    """RIRs and noise clips at ``sample_rate``; copies at other rates are made once, on demand."""

    rirs: list[np.ndarray] = field(default_factory=list)
    #: RT60 (s) of each simulated room, by index; empty for a user's RIR files.
    rir_rt60s: list[float] = field(default_factory=list)
    noises: list[np.ndarray] = field(default_factory=list)
    sample_rate: int = 16000
    rir_source: str = "none"
    noise_source: str = "coloured"
    noise_seed: int = 0
    _bank: list[np.ndarray] = field(default_factory=list, repr=False)
    _resampled: dict[tuple[str, int], list[np.ndarray]] = field(default_factory=dict, repr=False)

    def _at(self, kind: str, clips: list[np.ndarray], rate: int) -> list[np.ndarray]:
        if rate == self.sample_rate:
            return clips
        if (kind, rate) not in self._resampled:
            self._resampled[kind, rate] = [resample(c, self.sample_rate, rate)[0] for c in clips]
        return self._resampled[kind, rate]

    def rirs_at(self, rate: int) -> list[np.ndarray]:
        return self._at("rir", self.rirs, rate)

    def noises_at(self, rate: int) -> list[np.ndarray]:
        return self._at("noise", self.noises, rate)

    def bank_at(self, rate: int) -> list[np.ndarray]:
        """Generated coloured noise, one clip per ``NOISE_BETAS`` slope, made once from
        ``noise_seed``. Resampling to a channel rate band-limits it to that channel."""
        if not self._bank:
            length = int(NOISE_BANK_SECONDS * self.sample_rate)
            self._bank = [
                coloured_noise(length, self.sample_rate, beta, seed=self.noise_seed * 101 + k)
                for k, beta in enumerate(NOISE_BETAS)
            ]
        return self._at("bank", self._bank, rate)


def late_tail(
    rir: np.ndarray, rt60: float, sample_rate: int, mixing_s: float, seed: int
) -> np.ndarray:
    """``rir`` from ``mixing_s`` on replaced by noise decaying at 60 dB per ``rt60``.

    The image sources stop at ``MAX_ORDER`` reflections, about ``MAX_ORDER`` mean
    free paths of sound (``mixing_s``); after that a long room's simulated response
    thins out and falls faster than the room does: convolved with a 1.1 s room,
    speech measured (``reverb.estimate_rt60``) 0.76 s. A room's late field is
    diffuse, so noise decaying at the room's rate from the response's level just
    before ``mixing_s`` is what the missing reflections add up to (the stochastic
    half of hybrid room simulators)."""
    mix = int(mixing_s * sample_rate)
    window = max(int(0.02 * sample_rate), 1)
    if mix <= window or mix >= len(rir) + int(rt60 * sample_rate):
        return rir
    before = rir[mix - window : mix]
    level = float(np.sqrt(np.mean(np.square(before, dtype=np.float64))))
    t = np.arange(int(rt60 * sample_rate)) / sample_rate
    noise = np.random.default_rng(seed).standard_normal(len(t))
    tail = (level * noise * 10 ** (-3 * t / rt60)).astype(np.float32)
    return np.concatenate([rir[:mix], tail])


def simulate_rooms(
    count: int,
    sample_rate: int,
    seed: int,
    rt60_range: tuple[float, float] = RT60_RANGE,
    full_tail: bool = False,
) -> list[tuple[np.ndarray, float]]:
    """``count`` shoebox rooms with random size, RT60 (uniform over ``rt60_range``) and
    source/microphone positions: each room's impulse response and its RT60.

    ``full_tail`` continues each response past the image sources (``late_tail``).
    Off for the paper's rooms (``RT60_RANGE``), whose responses stay as every
    earlier run made them; on for rooms sized from a target's measured RT60."""
    import pyroomacoustics as pra

    rng = np.random.default_rng([seed, sample_rate, count])
    rooms = []
    for _ in range(count):
        dims = rng.uniform([3.0, 3.0, 2.4], [10.0, 8.0, 4.0])
        rt60 = float(rng.uniform(*rt60_range))
        absorption, max_order = pra.inverse_sabine(rt60, dims)
        room = pra.ShoeBox(
            dims.tolist(),
            fs=sample_rate,
            materials=pra.Material(absorption),
            max_order=min(max_order, MAX_ORDER),
        )
        margin = 0.5
        room.add_source(rng.uniform(margin, dims - margin).tolist())
        room.add_microphone(rng.uniform(margin, dims - margin).tolist())
        room.compute_rir()
        rir = np.asarray(room.rir[0][0], dtype=np.float32)
        if full_tail and max_order > MAX_ORDER:
            x, y, z = (float(d) for d in dims)
            free_path = 4 * x * y * z / (2 * (x * y + y * z + x * z))  # 4V/S
            mixing_s = MAX_ORDER * free_path / SPEED_OF_SOUND
            rir = late_tail(rir, rt60, sample_rate, mixing_s, seed=int(rng.integers(2**31)))
        rooms.append((rir / float(np.max(np.abs(rir))), rt60))
    return rooms


def simulate_rirs(
    count: int, sample_rate: int, seed: int, rt60_range: tuple[float, float] = RT60_RANGE
) -> list[np.ndarray]:
    return [rir for rir, _ in simulate_rooms(count, sample_rate, seed, rt60_range)]


def cached_rooms(
    cache_dir: str | Path,
    count: int,
    sample_rate: int,
    seed: int,
    rt60_range: tuple[float, float] = RT60_RANGE,
    full_tail: bool = False,
) -> tuple[list[np.ndarray], list[float]]:
    """The simulated rooms' impulse responses and RT60s, made once per settings."""
    low, high = (round(v, 3) for v in rt60_range)
    tail = "-tail" if full_tail else ""
    path = Path(cache_dir) / f"rirs-{count}-{sample_rate}-{seed}-rt{low:g}-{high:g}{tail}.npz"
    if path.exists():
        with np.load(path) as data:
            return [data[f"rir{i}"] for i in range(count)], [float(v) for v in data["rt60"]]
    rooms = simulate_rooms(count, sample_rate, seed, (low, high), full_tail)
    buffer = io.BytesIO()
    # Any: numpy's stub types **kwds as if one could be its allow_pickle flag.
    arrays: dict[str, Any] = {f"rir{i}": r for i, (r, _) in enumerate(rooms)}
    arrays["rt60"] = np.array([rt60 for _, rt60 in rooms])
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())
    return [r for r, _ in rooms], [rt60 for _, rt60 in rooms]


def load_directory(
    directory: str | Path, sample_rate: int, volumes: Volumes | None = None
) -> list[np.ndarray]:
    """Every readable audio file under ``directory`` as mono float32 at ``sample_rate``.

    With ``volumes``, files resolving outside the directory's volume are left out, each
    named on stderr (a folder outside the volumes is a ValueError)."""
    clips = []
    files = find_audio_files(directory)
    problems = ManifestProblems()
    usable = inside_volumes(Path(directory), files, problems, volumes)
    for _, reason in problems.outside:
        print(f"skipped {reason}", file=sys.stderr)
    for path in usable:
        try:
            data, info = read_audio(path)
        except AudioRejected:
            continue
        clips.append(resample(downmix(data), info.sample_rate, sample_rate)[0])
    if not clips:
        raise ValueError(f"{directory}: no readable audio file among {len(files)} found")
    return clips
