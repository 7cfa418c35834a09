"""Per-file metrics of the analysis phase (paper §3): pure functions of samples.

Loudness follows ITU-R BS.1770-4 (K-weighting, 400 ms blocks with 75 % overlap,
absolute gate -70 LUFS, relative gate -10 LU) with the same filter and block
layout as pyloudnorm, vectorised (one dot product per 100 ms hop, blocks as sums
of four hops) instead of a Python loop over blocks.

SNR is blind: speech has pauses, so the quietest 20 ms frames show the noise
floor and the loud ones show speech plus noise.

    noise  = 10th percentile of the frame powers
    active = mean power of the louder half of the frames (the "active level")
    SNR    = 10·log10((active - noise) / noise), clamped to [SNR_MIN, SNR_MAX]

Why this one rather than WADA-SNR: it needs no speech-amplitude model (WADA
assumes Gamma-distributed speech amplitudes, so it misreads anything else),
it works on any signal with pauses (a gated tone as well as speech), it costs one pass, and the
augmenter's noise operator uses the very same ``active_power`` to set its SNR,
so a drawn SNR is what the profile of the result measures. Its limit: a signal
without pauses (continuous music, a steady tone) reads as a low SNR.

Spectral centroid and 85 % rolloff are averaged over the frames that carry
energy (within 50 dB of the loudest frame), with magnitude spectra of
~32 ms Hann frames, so leading silence does not pull the means to zero.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from pydantic import BaseModel, Field
from scipy import signal

from marco_trainer.audio.channel import ChannelMetrics, measure_channel
from marco_trainer.audio.dropouts import dropout_runs
from marco_trainer.audio.io import AudioInfo, downmix
from marco_trainer.audio.noise_floor import noise_floor_bands
from marco_trainer.audio.reverb import estimate_rt60
from marco_trainer.audio.spectra import ACTIVE_FRAME_RANGE, active_spectra

SNR_FRAME_SECONDS = 0.02
SNR_NOISE_PERCENTILE = 10.0
SNR_MIN = -10.0
SNR_MAX = 80.0
#: Loudness below the BS.1770 absolute gate reads as the gate itself.
LUFS_FLOOR = -70.0
ROLLOFF_SHARE = 0.85
#: Level spread: frame length, and the percentiles whose distance it is.
SPREAD_FRAME_SECONDS = 0.05
SPREAD_PERCENTILES = (10.0, 90.0)

_CHANNEL_GAINS = (1.0, 1.0, 1.0, 1.41, 1.41)
#: Dropout runs kept per file: enough to read a link's loss, bounded per record.
MAX_DROPOUT_RUNS = 200


class FileMetrics(BaseModel):
    """What the analysis phase measures for one file."""

    path: str
    sample_rate: int
    bit_depth: int
    subtype: str
    channels: int
    duration_s: float
    snr_db: float
    lufs: float
    centroid_hz: float
    rolloff_hz: float
    level_spread_db: float | None = Field(
        default=None, description="p90 - p10 of 50 ms frame levels (dynamic range)."
    )
    clipped_share: float | None = Field(
        default=None,
        description="Share of samples on flat tops at the file's peak (clipped_share()): "
        "a saturated stage in the channel.",
    )
    noise_seconds: float | None = Field(
        default=None, description="Non-speech audio harvested from the file as noise."
    )
    noise_floor_db: list[float | None] | None = Field(
        default=None,
        description="Noise-floor band levels (noise_floor.NOISE_BANDS_HZ), dB re their total.",
    )
    dropouts_s: list[float] | None = Field(
        default=None,
        description="Lengths (s) of the runs of digital silence inside the file (lost packets; "
        f"dropouts.py), the first {MAX_DROPOUT_RUNS}.",
    )
    rt60_s: float | None = Field(
        default=None,
        description="Blind reverberation time (reverb.estimate_rt60); None: too few clear "
        "decays to tell, or a profile made before it was measured.",
    )
    channel: ChannelMetrics | None = Field(
        default=None, description="Codec and pass band (None in profiles made before them)."
    )


def _biquad(kind: str, gain_db: float, q: float, f0: float, rate: float) -> np.ndarray:
    """Audio-EQ-cookbook biquad as one SOS row (the shapes BS.1770's K-weighting uses)."""
    a = 10 ** (gain_db / 40)
    w0 = 2 * math.pi * f0 / rate
    alpha = math.sin(w0) / (2 * q)
    cos = math.cos(w0)
    if kind == "high_shelf":
        root = 2 * math.sqrt(a) * alpha
        b = (
            a * ((a + 1) + (a - 1) * cos + root),
            -2 * a * ((a - 1) + (a + 1) * cos),
            a * ((a + 1) + (a - 1) * cos - root),
        )
        den = (
            (a + 1) - (a - 1) * cos + root,
            2 * ((a - 1) - (a + 1) * cos),
            (a + 1) - (a - 1) * cos - root,
        )
    elif kind == "high_pass":
        b = ((1 + cos) / 2, -(1 + cos), (1 + cos) / 2)
        den = (1 + alpha, -2 * cos, 1 - alpha)
    else:
        raise ValueError(f"unknown biquad {kind!r}")
    return np.array([*(x / den[0] for x in b), 1.0, den[1] / den[0], den[2] / den[0]])


@lru_cache(maxsize=32)
def _k_weighting(rate: float, dtype: np.dtype) -> np.ndarray:
    return k_weighting(rate).astype(dtype)


def k_weighting(rate: float) -> np.ndarray:
    return np.stack(
        [
            _biquad("high_shelf", 4.0, 1 / math.sqrt(2), 1500.0, rate),
            _biquad("high_pass", 0.0, 0.5, 38.0, rate),
        ]
    )


#: BS.1770's gates as powers: a block is louder than -70 LUFS when its weighted
#: power is above this, and the relative gate (-10 LU) is a tenth of a power.
_ABSOLUTE_GATE_POWER = 10 ** ((LUFS_FLOOR + 0.691) / 10)
_RELATIVE_GATE_SHARE = 0.1


def integrated_loudness(
    data: np.ndarray, rate: int, block: float = 0.4, overlap: float = 0.75
) -> float:
    """Integrated loudness in LUFS of ``(frames,)`` or ``(frames, channels)``; -inf if all gated.

    A file shorter than one 400 ms block is measured as one block padded with silence
    (pyloudnorm refuses such files). The gates compare block powers rather than
    their logarithms (the same comparisons, one log10 instead of one per block),
    which matters for the augmenter: it measures every utterance it writes.
    """
    x = np.asarray(data)
    x = x[None, :] if x.ndim == 1 else x.T  # (channels, frames): running sums along rows
    channels, frames = x.shape
    weighted = signal.sosfilt(_k_weighting(rate, x.dtype), x, axis=-1)
    step = 1.0 - overlap
    count = max(int(np.round((frames / rate - block) / (block * step))) + 1, 1)
    z = _block_energies(weighted, rate, block, step, count)  # (channels, blocks)
    if channels == 1:
        power = z[0]
    else:
        power = np.array([_CHANNEL_GAINS[min(i, 4)] for i in range(channels)]) @ z
    above = power[power >= _ABSOLUTE_GATE_POWER]
    if not len(above):
        return -math.inf
    gated = above[above > _RELATIVE_GATE_SHARE * (float(above.sum()) / len(above))]
    if not len(gated):
        return -math.inf
    return -0.691 + 10 * math.log10(float(gated.sum()) / len(gated))


def _block_energies(
    weighted: np.ndarray, rate: int, block: float, step: float, count: int
) -> np.ndarray:
    """Mean square of each gating block, ``(channels, blocks)``, with pyloudnorm's bounds.

    When a hop (block × step) is a whole number of samples (10 Hz hops at any
    rate divisible by 10), blocks are sums of consecutive hop energies (each
    hop summed pairwise in the signal's precision, the few hop sums added in
    float64); else differences of a float64 running sum.
    """
    channels, frames = weighted.shape
    hop = block * step * rate
    per = round(1 / step)
    if hop.is_integer() and abs(per * step - 1) < 1e-12:
        hop = int(hop)
        needed = count - 1 + per
        whole = min(frames // hop, needed)
        w = weighted[:, : whole * hop].reshape(channels, whole, hop)
        hops = np.zeros((channels, needed))
        hops[:, :whole] = (w[..., None, :] @ w[..., :, None])[..., 0, 0]  # a dot per hop
        if whole < needed:  # the last blocks run past the end and see silence, as in slicing
            rest = weighted[:, whole * hop :]
            hops[:, whole] = np.einsum("cs,cs->c", rest, rest)
        sums = hops[:, :count].copy()
        for k in range(1, per):
            sums += hops[:, k : k + count]
        sums /= block * rate
        return sums
    power = np.square(weighted, dtype=np.float64)
    cumulative = np.concatenate([np.zeros((channels, 1)), np.cumsum(power, axis=-1)], axis=-1)
    j = np.arange(count, dtype=np.float64)
    lower = np.minimum((block * (j * step) * rate).astype(np.int64), frames)
    upper = np.minimum((block * (j * step + 1) * rate).astype(np.int64), frames)
    return (cumulative[:, upper] - cumulative[:, lower]) / (block * rate)


def frame_powers(x: np.ndarray, rate: int, frame_seconds: float = SNR_FRAME_SECONDS) -> np.ndarray:
    """Mean square of each whole 20 ms frame (float64; each frame summed in the signal's
    precision, which for 20 ms of float32 is exact to ~1e-7)."""
    size = max(int(rate * frame_seconds), 1)
    count = len(x) // size
    if count == 0:
        return np.array([float(np.mean(np.square(x, dtype=np.float64)))])
    frames = np.asarray(x[: count * size]).reshape(count, size)
    return np.einsum("ij,ij->i", frames, frames).astype(np.float64) / size


def _median(values: np.ndarray) -> float:
    """``np.median`` of a 1-D float array (the same partition and mean of the middle
    pair), without its generic-axis bookkeeping: it runs once per augmented utterance."""
    middle = len(values) // 2
    if len(values) % 2:
        return float(np.partition(values, middle)[middle])
    part = np.partition(values, (middle - 1, middle))
    return float((part[middle - 1] + part[middle]) / 2)


def active_power(x: np.ndarray, rate: int) -> float:
    """Mean power of the louder half of the 20 ms frames (the level SNRs refer to)."""
    powers = frame_powers(x, rate)
    active = powers[powers >= _median(powers)]
    return float(active.sum()) / len(active)


def estimate_snr(x: np.ndarray, rate: int) -> float:
    """Blind SNR in dB of mono ``x`` (see the module docstring)."""
    powers = frame_powers(x, rate)
    noise = float(np.percentile(powers, SNR_NOISE_PERCENTILE))
    loud = powers[powers >= _median(powers)]
    speech = float(loud.sum()) / len(loud) - noise
    if speech <= 0:
        return SNR_MIN
    if noise <= 0:
        return SNR_MAX
    return float(np.clip(10 * np.log10(speech / noise), SNR_MIN, SNR_MAX))


def mean_rolloff(magnitude: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    """Mean 85 % rolloff over frames; ``magnitude`` is ``(..., frames, bins)``."""
    cumulative = np.cumsum(magnitude, axis=-1)
    index = np.argmax(cumulative >= ROLLOFF_SHARE * cumulative[..., -1:], axis=-1)
    return freqs[index].mean(axis=-1)


def spectral_shape(x: np.ndarray, rate: int) -> tuple[float, float]:
    """Mean spectral centroid and mean 85 % rolloff (Hz) over the active frames of mono ``x``."""
    magnitude, freqs = active_spectra(x, rate)
    if not len(magnitude):
        return 0.0, 0.0
    centroid = (magnitude @ freqs) / magnitude.sum(axis=1)
    return float(centroid.mean()), float(mean_rolloff(magnitude, freqs))


def frame_levels_db(x: np.ndarray, rate: int) -> np.ndarray:
    """Levels (dB) of the 50 ms frames within 50 dB of the loudest one."""
    powers = frame_powers(x, rate, SPREAD_FRAME_SECONDS)
    loud = powers[powers > float(powers.max()) * ACTIVE_FRAME_RANGE]
    return 10 * np.log10(np.maximum(loud, 1e-20))


def level_spread(x: np.ndarray, rate: int) -> float:
    """p90 - p10 of the frame levels in dB: how much the level moves within a file.
    A compressed (AGC'd, limited) channel narrows it; pauses and dynamics widen it."""
    levels = frame_levels_db(x, rate)
    low, high = np.percentile(levels, SPREAD_PERCENTILES)
    return float(high - low)


#: A flat top: this many samples in a row or more, each within CLIP_TOLERANCE of the peak.
CLIP_RUN = 3
CLIP_TOLERANCE = 0.99


def clipped_share(x: np.ndarray) -> float:
    """The share of samples that sit on flat tops at the file's peak magnitude.

    A stage driven past its limit (an overloaded converter, an overdriven
    transmitter) flattens every peak at one level, and a file normalised after it
    keeps the plateaus at its own peak. Speech that was never clipped reaches its
    peak once, at one crest: a 100 Hz crest at 8 kHz stays within 1 % of its top
    for 3 samples. (A steady tone at full scale reaches it at every crest and reads
    a few percent; speech is not steady.)
    """
    magnitude = np.abs(np.asarray(x, dtype=np.float64))
    top = float(magnitude.max()) if magnitude.size else 0.0
    if top <= 0:
        return 0.0
    near = np.concatenate([[False], magnitude >= CLIP_TOLERANCE * top, [False]])
    edges = np.flatnonzero(np.diff(near.astype(np.int8)))
    runs = edges[1::2] - edges[::2]
    return float(runs[runs >= CLIP_RUN].sum() / magnitude.size)


def measure(path: str, data: np.ndarray, info: AudioInfo) -> FileMetrics:
    """All metrics of one decoded file; ``data`` is ``(frames, channels)``.

    Every metric, loudness included, is of the mono downmix the augmenter reads a file
    as and writes its outputs in: BS.1770 sums the channels' powers (each surround one
    +1.5 dB), so a 6-channel file read 8.6 dB louder than its mono self, and outputs
    drawn to the profile's loudness came out that much too loud.
    """
    mono = downmix(data)
    rate = info.sample_rate
    lufs = integrated_loudness(mono, rate)
    centroid, rolloff = spectral_shape(mono, rate)
    return FileMetrics(
        path=path,
        sample_rate=rate,
        bit_depth=info.bit_depth,
        subtype=info.subtype,
        channels=info.channels,
        duration_s=info.duration,
        snr_db=estimate_snr(mono, rate),
        lufs=max(lufs, LUFS_FLOOR),
        centroid_hz=centroid,
        rolloff_hz=rolloff,
        level_spread_db=level_spread(mono, rate),
        clipped_share=clipped_share(mono),
        channel=measure_channel(mono, rate, info.subtype),
        rt60_s=estimate_rt60(mono, rate),
        noise_floor_db=noise_floor_bands(mono, rate),
        dropouts_s=dropout_runs(mono, rate)[:MAX_DROPOUT_RUNS],
    )
