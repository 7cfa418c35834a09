"""Profile aggregation, shard merge, the match report and the filter rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from marco_trainer.audio.features import FileMetrics
from marco_trainer.audio.filtering import FilterRules, approx_tokens, judge
from marco_trainer.audio.match import compare_profiles, ks_distance, plot_match
from marco_trainer.audio.profile import (
    VALUES_LIMIT,
    ProfileShard,
    build_profile,
    load_profile,
    merge_shards,
    write_shard,
)


def _records(n: int, shift: float = 0.0, seed: int = 0) -> list[FileMetrics]:
    rng = np.random.default_rng(seed)
    return [
        FileMetrics(
            path=f"dir/{i:04d}.wav",
            sample_rate=int(rng.choice([8000, 16000])),
            bit_depth=16,
            subtype="PCM_16",
            channels=1,
            duration_s=float(rng.uniform(1, 10)),
            snr_db=float(rng.normal(20 + shift, 3)),
            lufs=float(rng.normal(-30 + shift, 2)),
            centroid_hz=float(rng.normal(1500 + 100 * shift, 100)),
            rolloff_hz=float(rng.normal(3000 + 200 * shift, 200)),
        )
        for i in range(n)
    ]


def test_summary_statistics():
    records = _records(500)
    profile = build_profile(records, {"silent": 2})
    snr = np.array([r.snr_db for r in records])
    s = profile.metric("snr_db")
    assert s.mean == pytest.approx(snr.mean()) and s.std == pytest.approx(snr.std())
    assert s.percentile(50) == pytest.approx(np.median(snr))
    assert (s.min, s.max) == (snr.min(), snr.max())
    assert sum(s.histogram.counts) == 500 and len(s.values) == 500
    assert sum(profile.sample_rate.values()) == 500 and profile.skipped == {"silent": 2}


def test_merged_shards_equal_one_shard(tmp_path):
    records = _records(101)
    whole = build_profile(records, {"clipped": 3})
    parts = [
        ProfileShard(shard_index=i, num_shards=3, records=records[i::3], skipped={"clipped": 1})
        for i in range(3)
    ]
    assert merge_shards(parts) == whole
    for part in reversed(parts):
        write_shard(tmp_path, part)
    assert load_profile(tmp_path) == whole
    (tmp_path / "profile.json").write_text(whole.model_dump_json())
    assert load_profile(tmp_path / "profile.json") == whole


def test_an_unfinished_shard_set_is_refused(tmp_path):
    write_shard(tmp_path, ProfileShard(shard_index=0, num_shards=2, records=_records(3)))
    with pytest.raises(ValueError, match=r"shards \[1\] of 2"):
        load_profile(tmp_path)


def test_values_are_dropped_past_the_limit_and_ks_uses_histograms():
    big = build_profile(_records(VALUES_LIMIT + 1))
    assert big.metric("lufs").values is None
    small = build_profile(_records(300, seed=1))
    assert ks_distance(big.metric("lufs"), small.metric("lufs")) < 0.1


def test_ks_distance_separates_shifted_sets():
    a = build_profile(_records(300, seed=1))
    b = build_profile(_records(300, seed=2))
    far = build_profile(_records(300, shift=20.0, seed=3))
    assert ks_distance(a.metric("snr_db"), b.metric("snr_db")) < 0.15
    assert ks_distance(a.metric("snr_db"), far.metric("snr_db")) > 0.95


def test_match_report_and_plots(tmp_path):
    target = build_profile(_records(200, seed=1))
    augmented = build_profile(_records(200, shift=0.2, seed=2))
    source = build_profile(_records(200, shift=8.0, seed=3))
    report = compare_profiles(target, augmented, source)
    assert report.matched and report.source_matched is False
    assert {m.metric for m in report.metrics} == {"snr_db", "lufs", "centroid_hz", "rolloff_hz"}
    assert all(m.inside_target_range > 0.7 for m in report.metrics)
    paths = plot_match(target, augmented, source, tmp_path)
    for path in paths.values():
        assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_filter_rules():
    rules = FilterRules(min_duration=0.5, max_duration=20, max_text_tokens=50)
    assert judge("hello there", 1.0, rules) is None
    assert judge("hello", 0.2, rules)[0] == "too_short"
    assert judge("hello", 25.0, rules)[0] == "too_long"
    assert judge("  ", 1.0, rules)[0] == "empty_text"
    assert judge("word " * 60, 15.0, rules)[0] == "text_too_long"
    assert judge("a" * 100, 1.0, rules)[0] == "chars_per_second_high"
    assert judge("hi", 10.0, rules)[0] == "chars_per_second_low"
    assert approx_tokens("你好世界") == 4 + 4
    assert approx_tokens("a" * 300) == 100 + 4
