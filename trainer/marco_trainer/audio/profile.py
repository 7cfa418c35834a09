"""The target profile: per-metric distributions, built from mergeable per-shard state.

A shard keeps every file's metrics (a few numbers per file), so merging shards
is concatenation and the merged profile is exactly the one-shard profile:
summaries are computed from records sorted by path, with ``math.fsum`` for the
moments, so nothing depends on how files were split. Histograms use fixed bins
per metric (values outside are counted in the edge bins) so histograms of any
two profiles line up for plots and CDF distances; per-file values are kept up to
``VALUES_LIMIT`` files for exact two-sample tests.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from marco_contract.files import atomic_write_text
from marco_contract.layout import PROFILE_FILE
from marco_trainer.audio.channel import THIRD_OCTAVES_HZ
from marco_trainer.audio.dropouts import gilbert_burst, packet_seconds
from marco_trainer.audio.features import FileMetrics
from marco_trainer.audio.noise_floor import NOISE_BANDS_HZ
from marco_trainer.audio.reverb import REVERBERANT_RT60_S
from marco_trainer.audio.spectra import mean_levels_db, median_levels_db

#: Continuous metrics and their fixed histogram bins (low, high, bins).
METRIC_BINS: dict[str, tuple[float, float, int]] = {
    "duration_s": (0.0, 60.0, 240),
    "snr_db": (-10.0, 80.0, 180),
    "lufs": (-70.0, 0.0, 140),
    "centroid_hz": (0.0, 24000.0, 480),
    "rolloff_hz": (0.0, 24000.0, 480),
}
#: Metrics added later: summarised when every record has them (older shards do not).
OPTIONAL_METRIC_BINS: dict[str, tuple[float, float, int]] = {
    "level_spread_db": (0.0, 60.0, 240),
    "clipped_share": (0.0, 0.5, 500),
}
#: Summarised over the files where it could be measured (``ReverbProfile``).
REVERB_BINS: dict[str, tuple[float, float, int]] = {"rt60_s": (0.0, 3.0, 120)}
#: A channel property is applied when at least this share of the files shows it.
CHANNEL_MAJORITY = 0.5
PERCENTILES = (1, 5, 10, 25, 50, 75, 90, 95, 99)
VALUES_LIMIT = 20000

SHARD_PATTERN = re.compile(r"^profile-shard-(\d{5})-of-(\d{5})\.json$")


class Histogram(BaseModel):
    edges: list[float]
    counts: list[int]


class MetricSummary(BaseModel):
    count: int
    min: float
    max: float
    mean: float
    std: float
    percentiles: dict[str, float] = Field(description="Keys p1 … p99.")
    histogram: Histogram
    values: list[float] | None = Field(
        default=None, description=f"Per-file values (sorted by path), up to {VALUES_LIMIT} files."
    )

    def percentile(self, q: int) -> float:
        return self.percentiles[f"p{q}"]


class ChannelProfile(BaseModel):
    """The target's channel, over the files (``channel.py`` measures each file)."""

    codec: dict[str, int] = Field(description="Files per detected codec (pcm: none seen).")
    codec_evidence: dict[str, int] = Field(
        description="Files per evidence: subtype, samples, spectrum."
    )
    mp3_spectral_holes: float | None = Field(
        default=None,
        description="Median spectral-hole share of the files found MP3-coded: the level the "
        "augment stage's codec calibration matches (None: no such file).",
    )
    narrowband_files: int = Field(description="Files with a steep upper band edge.")
    narrowband_share: float = Field(description="Their share: the band's confidence.")
    band_low_hz: float | None = Field(description="Median lower edge of the narrowband files.")
    band_high_hz: float | None = Field(description="Median upper edge of the narrowband files.")
    bands_hz: list[float] = Field(description="Third-octave band centres of band_levels_db.")
    band_levels_db: list[float | None] = Field(
        description="Long-term spectrum per band (mean power over files, dB re speech band)."
    )
    band_levels_median_db: list[float | None] | None = Field(
        default=None,
        description="The same, the median file per band: what the equaliser matches "
        "(None in profiles written before it).",
    )

    @property
    def narrowband(self) -> bool:
        return self.narrowband_share >= CHANNEL_MAJORITY


class ReverbProfile(BaseModel):
    """The target's rooms, from the files whose RT60 could be read (``reverb.py``)."""

    measured_files: int = Field(description="Files with enough clear decays to read an RT60.")
    reverberant_files: int = Field(description=f"Of those, RT60 >= {REVERBERANT_RT60_S} s.")
    reverberant_share: float = Field(description="Their share: p_rev of the measured chain.")
    rt60_s: MetricSummary = Field(description="RT60 of the measured files.")
    reverberant_rt60_s: MetricSummary | None = Field(
        description="RT60 of the reverberant files: the rooms the augmenter simulates."
    )


class NoiseSpectrum(BaseModel):
    """The target's noise floor, averaged over its files (``noise_floor.py``)."""

    files: int = Field(description="Files it was read from.")
    bands_hz: list[float] = Field(description="Third-octave band centres.")
    levels_db: list[float | None] = Field(description="Mean level per band, dB re total.")


class DropoutProfile(BaseModel):
    """Lost packets in the target (``dropouts.py``), over the files that have any."""

    files: int = Field(description="Files with at least one dropout.")
    share: float = Field(description="Their share of the files: how often the chain drops.")
    loss: float = Field(description="Mean share of their time that is dropped out.")
    packet_s: float = Field(description="The packet length the runs are made of.")
    burst: float = Field(description="P(a loss continues) of the matching Gilbert channel.")


class Profile(BaseModel):
    """What the analysis phase says about a corpus (paper §3)."""

    schema_version: int = 1
    files: int = Field(description="Files measured.")
    skipped: dict[str, int] = Field(default_factory=dict, description="Files refused, per reason.")
    total_duration_s: float
    sample_rate: dict[int, int] = Field(description="Files per sample rate.")
    bit_depth: dict[int, int] = Field(description="Files per bit depth (0: lossy codec).")
    subtype: dict[str, int] = Field(description="Files per soundfile subtype (PCM_16, ULAW, …).")
    channels: dict[int, int]
    metrics: dict[str, MetricSummary]
    channel: ChannelProfile | None = Field(
        default=None, description="Codec and band (None in profiles made before them)."
    )
    noise_seconds: float = Field(
        default=0.0, description="Non-speech audio harvested as noise (profile's noise/ dir)."
    )
    reverb: ReverbProfile | None = Field(
        default=None, description="Reverberation (None: no file could be read, or older)."
    )
    noise_spectrum: NoiseSpectrum | None = Field(
        default=None, description="The noise floor's spectrum (None in older profiles)."
    )
    dropouts: DropoutProfile | None = Field(
        default=None, description="Lost packets (None: no file has any, or older profiles)."
    )

    def metric(self, name: str) -> MetricSummary:
        if name not in self.metrics:
            raise KeyError(f"profile has no metric {name!r} (has {sorted(self.metrics)})")
        return self.metrics[name]


class ProfileShard(BaseModel):
    """One shard's partial: the records themselves (the mergeable state)."""

    shard_index: int
    num_shards: int
    records: list[FileMetrics]
    skipped: dict[str, int] = Field(default_factory=dict)


def shard_file_name(index: int, count: int) -> str:
    return f"profile-shard-{index:05d}-of-{count:05d}.json"


def _summary(name: str, values: np.ndarray) -> MetricSummary:
    low, high, bins = {**METRIC_BINS, **OPTIONAL_METRIC_BINS, **REVERB_BINS}[name]
    counts, edges = np.histogram(np.clip(values, low, high), bins=bins, range=(low, high))
    mean = math.fsum(values) / len(values)
    variance = math.fsum((v - mean) ** 2 for v in values) / len(values)
    return MetricSummary(
        count=len(values),
        min=float(values.min()),
        max=float(values.max()),
        mean=mean,
        std=math.sqrt(variance),
        percentiles={f"p{q}": float(np.percentile(values, q)) for q in PERCENTILES},
        histogram=Histogram(edges=[float(e) for e in edges], counts=[int(c) for c in counts]),
        values=[float(v) for v in values] if len(values) <= VALUES_LIMIT else None,
    )


def build_profile(records: list[FileMetrics], skipped: dict[str, int] | None = None) -> Profile:
    """Summarise per-file records; the result does not depend on their order."""
    if not records:
        raise ValueError(f"no file could be measured (skipped: {dict(skipped or {})})")
    records = sorted(records, key=lambda r: r.path)
    names = list(METRIC_BINS) + [
        name for name in OPTIONAL_METRIC_BINS if all(getattr(r, name) is not None for r in records)
    ]
    metrics = {
        name: _summary(name, np.array([getattr(r, name) for r in records], dtype=np.float64))
        for name in names
    }
    return Profile(
        files=len(records),
        skipped=dict(sorted((skipped or {}).items())),
        total_duration_s=math.fsum(r.duration_s for r in records),
        sample_rate=dict(sorted(Counter(r.sample_rate for r in records).items())),
        bit_depth=dict(sorted(Counter(r.bit_depth for r in records).items())),
        subtype=dict(sorted(Counter(r.subtype for r in records).items())),
        channels=dict(sorted(Counter(r.channels for r in records).items())),
        metrics=metrics,
        channel=_channel_summary(records),
        noise_seconds=math.fsum(r.noise_seconds or 0.0 for r in records),
        reverb=_reverb_summary(records),
        noise_spectrum=_noise_spectrum(records),
        dropouts=_dropouts(records),
    )


def _dropouts(records: list[FileMetrics]) -> DropoutProfile | None:
    measured = [r for r in records if r.dropouts_s is not None]
    lossy = [r for r in measured if r.dropouts_s]
    if not lossy:
        return None
    runs = [v for r in lossy for v in r.dropouts_s or []]
    packet = packet_seconds(runs)
    return DropoutProfile(
        files=len(lossy),
        share=len(lossy) / len(measured),
        loss=math.fsum(math.fsum(r.dropouts_s or []) / r.duration_s for r in lossy) / len(lossy),
        packet_s=packet,
        burst=gilbert_burst(runs, packet),
    )


def _noise_spectrum(records: list[FileMetrics]) -> NoiseSpectrum | None:
    floors = [r.noise_floor_db for r in records if r.noise_floor_db is not None]
    levels = mean_levels_db(floors)
    if not any(v is not None for v in levels):
        return None
    return NoiseSpectrum(files=len(floors), bands_hz=list(NOISE_BANDS_HZ), levels_db=levels)


def _reverb_summary(records: list[FileMetrics]) -> ReverbProfile | None:
    rt60 = np.array([r.rt60_s for r in records if r.rt60_s is not None], dtype=np.float64)
    if not len(rt60):
        return None
    reverberant = rt60[rt60 >= REVERBERANT_RT60_S]
    return ReverbProfile(
        measured_files=len(rt60),
        reverberant_files=len(reverberant),
        reverberant_share=len(reverberant) / len(rt60),
        rt60_s=_summary("rt60_s", rt60),
        reverberant_rt60_s=_summary("rt60_s", reverberant) if len(reverberant) else None,
    )


def _channel_summary(records: list[FileMetrics]) -> ChannelProfile | None:
    channels = [r.channel for r in records if r.channel is not None]
    if len(channels) < len(records):
        return None
    narrow = [c for c in channels if c.narrowband]
    # Mean power over the files that reach a band, so 8 kHz files leave the upper ones out.
    levels = mean_levels_db([c.band_levels_db for c in channels])
    mp3 = [c.spectral_holes for c in channels if c.codec == "mp3"]
    holes = [h for h in mp3 if h is not None]
    return ChannelProfile(
        codec=dict(sorted(Counter(c.codec for c in channels).items())),
        codec_evidence=dict(sorted(Counter(c.codec_evidence for c in channels).items())),
        mp3_spectral_holes=float(np.median(holes)) if holes else None,
        narrowband_files=len(narrow),
        narrowband_share=len(narrow) / len(channels),
        band_low_hz=float(np.median([c.band_low_hz for c in narrow])) if narrow else None,
        band_high_hz=float(np.median([c.band_high_hz for c in narrow])) if narrow else None,
        bands_hz=list(THIRD_OCTAVES_HZ),
        band_levels_db=levels,
        band_levels_median_db=median_levels_db([c.band_levels_db for c in channels]),
    )


def merge_shards(shards: list[ProfileShard]) -> Profile:
    skipped: Counter[str] = Counter()
    records: list[FileMetrics] = []
    for shard in shards:
        records.extend(shard.records)
        skipped.update(shard.skipped)
    return build_profile(records, dict(skipped))


def write_shard(directory: str | Path, shard: ProfileShard) -> Path:
    path = Path(directory) / shard_file_name(shard.shard_index, shard.num_shards)
    atomic_write_text(path, shard.model_dump_json())
    return path


def read_shards(directory: str | Path) -> list[ProfileShard]:
    """All shard partials in ``directory``; refuses an incomplete or mixed set."""
    directory = Path(directory)
    found: dict[int, set[int]] = {}
    for path in directory.iterdir():
        match = SHARD_PATTERN.match(path.name)
        if match:
            found.setdefault(int(match.group(2)), set()).add(int(match.group(1)))
    if not found:
        return []
    if len(found) > 1:
        raise ValueError(
            f"{directory}: shard partials of different runs: num_shards {sorted(found)}"
        )
    ((count, indices),) = found.items()
    missing = sorted(set(range(count)) - indices)
    if missing:
        raise ValueError(f"{directory}: profile shards {missing} of {count} have not finished")
    return [
        ProfileShard.model_validate_json((directory / shard_file_name(i, count)).read_text())
        for i in range(count)
    ]


def load_profile(path: str | Path) -> Profile:
    """A profile from a profile JSON file, or from a directory of shard partials (merged)."""
    path = Path(path)
    if path.is_dir():
        shards = read_shards(path)
        if shards:
            return merge_shards(shards)
        if (path / PROFILE_FILE).exists():
            return Profile.model_validate_json((path / PROFILE_FILE).read_text())
        raise ValueError(f"{path}: no {PROFILE_FILE} and no profile shard partials")
    if not path.exists():
        raise ValueError(f"{path}: profile not found")
    if SHARD_PATTERN.match(path.name):
        return merge_shards([ProfileShard.model_validate_json(path.read_text())])
    return Profile.model_validate_json(path.read_text())


#: Metrics only the target-channel steps read (compression's level spread, the
#: saturation's clipped share).
CHANNEL_METRICS = ("level_spread_db", "clipped_share")


def without_measured_channel(profile: Profile) -> Profile:
    """The profile as the chain saw it before the target's channel was measured: no
    channel, no harvested noise, no level spread or clipping, no reverberation, no noise
    spectrum, no dropouts. With augmentation.channelFromTarget off, the augmenter draws
    exactly the paper's Eq. 3 steps from it."""
    metrics = {k: v for k, v in profile.metrics.items() if k not in CHANNEL_METRICS}
    return profile.model_copy(
        update={
            "channel": None,
            "noise_seconds": 0.0,
            "metrics": metrics,
            "reverb": None,
            "noise_spectrum": None,
            "dropouts": None,
        }
    )
