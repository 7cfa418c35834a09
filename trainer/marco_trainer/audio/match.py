"""How well an augmented set matches the target: per-metric distances and overlay plots.

Distance per signal metric: the two-sample Kolmogorov–Smirnov statistic (0 =
same distribution, 1 = disjoint), exact from per-file values when both profiles
keep them, otherwise from the fixed-bin histogram CDFs (exact up to one bin).
Also reported: the share of augmented files inside the target's 5th..95th
percentile range. Sample rate and bit depth are compared by total-variation
distance for information only: augmented audio is written at the model's rate
by design, its channel rate and bit depth are in each line's parameters.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from marco_trainer.audio.profile import MetricSummary, Profile

#: The metrics Eq. 3 moves (duration is not an augmentation target).
SIGNAL_METRICS = ("snr_db", "lufs", "centroid_hz", "rolloff_hz")
#: KS statistic at or below which a metric counts as matched.
DEFAULT_THRESHOLD = 0.5


class MetricMatch(BaseModel):
    metric: str
    ks_augmented: float = Field(description="KS distance augmented ↔ target.")
    ks_source: float | None = Field(default=None, description="KS distance source ↔ target.")
    inside_target_range: float = Field(description="Share of augmented files in target p5..p95.")
    target_range: tuple[float, float]
    target_median: float
    augmented_median: float
    source_median: float | None = None
    matched: bool


class DiscreteMatch(BaseModel):
    metric: str
    tv_augmented: float
    tv_source: float | None = None


class MatchReport(BaseModel):
    threshold: float
    matched: bool = Field(description="Every signal metric within the threshold.")
    source_matched: bool | None = Field(
        default=None, description="Whether the source already matched (then augmenting was moot)."
    )
    metrics: list[MetricMatch]
    discrete: list[DiscreteMatch]
    plots: dict[str, str] = Field(default_factory=dict)


def _cdf(summary: MetricSummary) -> np.ndarray:
    counts = np.asarray(summary.histogram.counts, dtype=np.float64)
    return np.cumsum(counts) / counts.sum()


def ks_distance(a: MetricSummary, b: MetricSummary) -> float:
    if a.values is not None and b.values is not None:
        x, y = np.sort(a.values), np.sort(b.values)
        grid = np.concatenate([x, y])
        fx = np.searchsorted(x, grid, side="right") / len(x)
        fy = np.searchsorted(y, grid, side="right") / len(y)
        return float(np.max(np.abs(fx - fy)))
    if a.histogram.edges != b.histogram.edges:
        raise ValueError("histograms with different bins cannot be compared")
    return float(np.max(np.abs(_cdf(a) - _cdf(b))))


def _inside(summary: MetricSummary, low: float, high: float) -> float:
    if summary.values is not None:
        v = np.asarray(summary.values)
        return float(np.mean((v >= low) & (v <= high)))
    edges = np.asarray(summary.histogram.edges)
    centres = (edges[:-1] + edges[1:]) / 2
    counts = np.asarray(summary.histogram.counts, dtype=np.float64)
    return float(counts[(centres >= low) & (centres <= high)].sum() / counts.sum())


def _tv(a: dict, b: dict) -> float:
    ta, tb = sum(a.values()), sum(b.values())
    keys = set(a) | set(b)
    return 0.5 * sum(abs(a.get(k, 0) / ta - b.get(k, 0) / tb) for k in keys)


def compare_profiles(
    target: Profile,
    augmented: Profile,
    source: Profile | None = None,
    threshold: float = DEFAULT_THRESHOLD,
) -> MatchReport:
    """The profile-match report (pure: profiles in, report out)."""
    metrics = []
    for name in SIGNAL_METRICS:
        t, a = target.metric(name), augmented.metric(name)
        s = source.metric(name) if source else None
        low, high = t.percentile(5), t.percentile(95)
        ks = ks_distance(a, t)
        metrics.append(
            MetricMatch(
                metric=name,
                ks_augmented=ks,
                ks_source=ks_distance(s, t) if s else None,
                inside_target_range=_inside(a, low, high),
                target_range=(low, high),
                target_median=t.percentile(50),
                augmented_median=a.percentile(50),
                source_median=s.percentile(50) if s else None,
                matched=ks <= threshold,
            )
        )
    discrete = [
        DiscreteMatch(
            metric=name,
            tv_augmented=_tv(getattr(augmented, name), getattr(target, name)),
            tv_source=_tv(getattr(source, name), getattr(target, name)) if source else None,
        )
        for name in ("sample_rate", "bit_depth")
    ]
    return MatchReport(
        threshold=threshold,
        matched=all(m.matched for m in metrics),
        source_matched=all((m.ks_source or 0) <= threshold for m in metrics) if source else None,
        metrics=metrics,
        discrete=discrete,
    )


def plot_match(
    target: Profile, augmented: Profile, source: Profile | None, output_dir: str | Path
) -> dict[str, str]:
    """One PNG per signal metric: source, augmented and target histograms overlaid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = {
        "snr_db": "SNR (dB)",
        "lufs": "loudness (LUFS)",
        "centroid_hz": "spectral centroid (Hz)",
        "rolloff_hz": "spectral rolloff (Hz)",
    }
    paths = {}
    sets = [
        ("source", source, "tab:gray"),
        ("augmented", augmented, "tab:blue"),
        ("target", target, "tab:red"),
    ]
    for name in SIGNAL_METRICS:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        lows, highs = [], []
        for label, profile, colour in sets:
            if profile is None:
                continue
            summary = profile.metric(name)
            edges = np.asarray(summary.histogram.edges)
            counts = np.asarray(summary.histogram.counts, dtype=np.float64)
            density = counts / (counts.sum() * np.diff(edges))
            ax.stairs(
                density,
                edges,
                label=f"{label} (n={summary.count})",
                color=colour,
                fill=label == "target",
                alpha=0.35 if label == "target" else 1.0,
            )
            lows.append(summary.percentile(1))
            highs.append(summary.percentile(99))
        span = max(highs) - min(lows)
        ax.set_xlim(min(lows) - 0.15 * span - 1e-6, max(highs) + 0.15 * span + 1e-6)
        ax.set_xlabel(labels[name])
        ax.set_ylabel("density")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / f"match-{name}.png"
        tmp = out / f".match-{name}.tmp.png"
        fig.savefig(tmp, dpi=100)
        plt.close(fig)
        tmp.replace(path)
        paths[name] = str(path)
    return paths
