"""Clean speech augmented against a telephony profile comes out looking like the target."""

from __future__ import annotations

import json

import soundfile as sf

from marco_contract.results import read_stage_result
from marco_trainer.audio.harvest import FADE_SECONDS
from marco_trainer.audio.match import MatchReport
from marco_trainer.audio.profile import load_profile

#: KS distance (0 = same distribution, 1 = disjoint) at or below which a metric matches.
THRESHOLD = 0.5


def _lines(directory):
    return [
        json.loads(line)
        for path in sorted(directory.glob("manifest-*.jsonl"))
        for line in path.read_text().splitlines()
    ]


def test_profile_augment_report(corpus, tmp_path, marco_trainer):
    target, source, augmented = tmp_path / "target", tmp_path / "source", tmp_path / "aug"
    for i in range(2):
        marco_trainer(
            "profile",
            "--input",
            corpus / "target",
            "--output-dir",
            target,
            "--shard-index",
            i,
            "--num-shards",
            2,
        )
    marco_trainer("profile", "--input", corpus / "source" / "source.jsonl", "--output-dir", source)
    telephone = load_profile(target)
    assert telephone.sample_rate == {8000: 6}
    assert telephone.bit_depth == {8: 3, 13: 3}
    assert telephone == load_profile(target / "profile.json")
    # The corpus's codecs, as its containers name them; its 300-3400 Hz band, measured.
    channel = telephone.channel
    assert channel is not None
    assert channel.codec == {"gsm": 3, "mulaw": 3}
    assert channel.codec_evidence == {"subtype": 6}
    assert channel.narrowband and channel.band_high_hz is not None
    assert 3200 <= channel.band_high_hz <= 3700
    harvested = sorted((target / "noise").glob("*.wav"))
    kept = sum(sf.info(str(path)).duration for path in harvested)
    # The files' harvests, joined with one crossfade between each two files of a shard.
    overlaps = telephone.files * FADE_SECONDS
    assert telephone.noise_seconds - overlaps - 1e-3 <= kept <= telephone.noise_seconds + 1e-3

    marco_trainer(
        "augment",
        "--manifest",
        corpus / "source" / "source.jsonl",
        "--output-dir",
        augmented,
        "--profile",
        target,
        "--copies",
        2,
        "--seed",
        5,
        "--channel-from-target",
    )
    lines = _lines(augmented)
    assert len(lines) == 12
    by_source = {(line["source_audio_filepath"], line["text"]) for line in lines}
    assert len(by_source) == 6 and all(line["language"] == "en" for line in lines)
    for line in lines:
        step = line["augmentation"]
        assert step["chain"] == "profile" and step["resample"]["sample_rate"] == 8000
        assert step["filter"]["resolved"]
        line_step, squeeze = step["channel"], step["compression"]
        # R leaves the codec to the channel step, which runs the real one.
        assert step["resample"]["encoding"] == "pcm"
        assert line_step["codec"] in ("gsm", "mulaw") and line_step["resolved"]
        assert line_step["band_high_hz"] == channel.band_high_hz
        assert len(line_step["eq_gains_db"]) == len(channel.bands_hz)
        # Compression only for a compressed target (median spread under 15 dB).
        if telephone.metric("level_spread_db").percentile(50) < 15.0:
            assert squeeze["resolved"] and squeeze["ratio"] >= 1
        else:
            assert squeeze is None
        # Too little harvested: noise made to the target's noise-floor spectrum instead.
        assert step["noise"]["source"] == ("harvested" if kept >= 5.0 else "spectrum")
        info = sf.info(str(augmented / line["audio_filepath"]))
        assert (info.samplerate, info.subtype) == (16000, "PCM_16")
        assert abs(info.duration - line["duration"]) < 1e-3
    assert read_stage_result(augmented).counts["processed"] == 12
    # One equaliser for the set, as one channel colours every talker alike.
    assert len({tuple(line["augmentation"]["channel"]["eq_gains_db"]) for line in lines}) == 1
    assert "one equaliser for every copy" in read_stage_result(augmented).message

    # Without --channel-from-target (the default) the same profile gives the paper's
    # Eq. 3 steps only: no channel, no compression, no harvested noise.
    plain = tmp_path / "plain"
    clean = corpus / "source" / "source.jsonl"
    marco_trainer("augment", "--manifest", clean, "--output-dir", plain,
                  "--profile", target, "--copies", 1, "--seed", 5)  # fmt: skip
    for line in _lines(plain):
        step = line["augmentation"]
        assert step["channel"] is None and step["compression"] is None
        assert step["noise"]["source"] == "coloured"

    marco_trainer("profile", "--input", augmented, "--output-dir", tmp_path / "aug-profile")
    report_dir = tmp_path / "report"
    printed = marco_trainer(
        "profile-report",
        "--target",
        target,
        "--augmented",
        tmp_path / "aug-profile",
        "--source",
        source,
        "--output-dir",
        report_dir,
        "--threshold",
        THRESHOLD,
    ).stdout
    report = MatchReport.model_validate_json((report_dir / "match.json").read_text())
    distances = {
        m.metric: (round(m.ks_source, 2), round(m.ks_augmented, 2)) for m in report.metrics
    }
    assert report.matched, (distances, printed)
    assert report.source_matched is False, distances
    assert all(m.ks_augmented < m.ks_source for m in report.metrics), distances
    for metric in ("snr_db", "lufs", "centroid_hz", "rolloff_hz"):
        assert (report_dir / f"match-{metric}.png").read_bytes()[:4] == b"\x89PNG"


def test_outputs_do_not_depend_on_sharding(corpus, tmp_path, marco_trainer):
    manifest = corpus / "source" / "source.jsonl"
    marco_trainer(
        "augment",
        "--manifest",
        manifest,
        "--output-dir",
        tmp_path / "one",
        "--preset",
        "telephony",
        "--seed",
        9,
    )
    for i in range(2):
        marco_trainer(
            "augment",
            "--manifest",
            manifest,
            "--output-dir",
            tmp_path / "two",
            "--preset",
            "telephony",
            "--seed",
            9,
            "--shard-index",
            i,
            "--num-shards",
            2,
        )
    one = {line["audio_filepath"]: line for line in _lines(tmp_path / "one")}
    two = {line["audio_filepath"]: line for line in _lines(tmp_path / "two")}
    assert one == two and len(one) == 6
    assert len(list((tmp_path / "two").glob("manifest-*-of-00002.jsonl"))) == 2
    for name in one:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    assert {line["augmentation"]["chain"] for line in one.values()} == {"telephony"}
    assert read_stage_result(tmp_path / "two").counts["processed"] == 6


def test_copies_do_not_depend_on_where_the_run_directory_is(corpus, tmp_path, marco_trainer):
    """Filter then augment, as a run does, from two run directories at other depths: the
    same draws, names and samples, keyed by the paths the user's manifest names."""
    import os

    manifest = corpus / "source" / "source.jsonl"
    named = {
        os.path.normpath(json.loads(line)["audio_filepath"])
        for line in manifest.read_text().splitlines()
    }
    copies = {}
    for name, run in (("near", tmp_path / "a"), ("deep", tmp_path / "b" / "c" / "d" / "e")):
        marco_trainer("filter", "--manifest", manifest, "--output-dir", run / "filter")
        kept = run / "filter" / "kept.jsonl"
        marco_trainer(
            "augment", "--manifest", kept, "--output-dir", run / "augment",
            "--preset", "telephony", "--seed", 9,
        )  # fmt: skip
        lines = _lines(run / "augment")
        assert {line["source_audio_filepath"] for line in lines} == named
        copies[name] = {
            line["audio_filepath"]: (
                line["augmentation"],
                (run / "augment" / line["audio_filepath"]).read_bytes(),
            )
            for line in lines
        }
    assert copies["near"] == copies["deep"] and len(copies["near"]) == len(named)
