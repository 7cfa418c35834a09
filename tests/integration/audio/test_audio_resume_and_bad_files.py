"""Bad files are skipped and counted; a killed shard resumes without redoing finished work."""

from __future__ import annotations

import json
import shutil

import numpy as np
import soundfile as sf

from marco_contract.results import read_stage_result
from marco_trainer.audio.profile import load_profile

BAD_REASONS = {
    "text.wav": "unsupported_format",
    "empty.wav": "empty",
    "silent.wav": "silent",
    "tiny.wav": "too_short",
    "clipped.wav": "clipped",
    "dc.wav": "dc_only",
    "8hz.wav": "sample_rate_too_low",
    "missing.wav": "missing",
}


def _bad_files(directory) -> None:
    rate = 16000
    tone = 0.3 * np.sin(2 * np.pi * 300 * np.arange(rate) / rate)
    (directory / "text.wav").write_text("not audio at all")
    sf.write(directory / "empty.wav", np.zeros(0), rate)
    sf.write(directory / "silent.wav", np.zeros(rate), rate)
    sf.write(directory / "tiny.wav", tone[:100], rate)
    sf.write(directory / "clipped.wav", np.sign(tone), rate)
    sf.write(directory / "dc.wav", np.full(rate, 0.5), rate)
    sf.write(directory / "8hz.wav", tone[:16], 8)


def _mixed_manifest(corpus, directory, make_manifest):
    directory.mkdir()
    for wav in (corpus / "source").glob("*.wav"):
        shutil.copy(wav, directory / wav.name)
    _bad_files(directory)
    lines = [{"audio_filepath": f"utt{i}.wav", "text": f"line {i}"} for i in range(6)]
    lines += [{"audio_filepath": name, "text": "bad"} for name in BAD_REASONS]
    path = make_manifest(directory / "mixed.jsonl", lines)
    with path.open("a") as handle:
        handle.write('{"text": "a line without audio"}\n')
    return path


def test_augment_skips_bad_files_and_resumes(corpus, tmp_path, marco_trainer, make_manifest):
    manifest = _mixed_manifest(corpus, tmp_path / "data", make_manifest)
    out = tmp_path / "aug"
    args = (
        "augment",
        "--manifest",
        manifest,
        "--output-dir",
        out,
        "--preset",
        "telephony",
        "--copies",
        2,
        "--seed",
        3,
    )
    marco_trainer(*args)
    counts = read_stage_result(out).counts
    assert counts["processed"] == 12 and counts["outputs"] == 12
    assert counts["skipped"] == len(BAD_REASONS) + 1
    assert counts["skipped:bad_manifest_line"] == 1
    for reason in BAD_REASONS.values():
        assert counts[f"skipped:{reason}"] == 1, reason

    manifest_path = out / "manifest-00000-of-00001.jsonl"
    lines = [json.loads(x) for x in manifest_path.read_text().splitlines()]
    before = {x["audio_filepath"]: (out / x["audio_filepath"]).read_bytes() for x in lines}
    stamps = {name: (out / name).stat().st_mtime_ns for name in before}

    # A rerun of a finished shard does nothing.
    marco_trainer(*args)
    counts = read_stage_result(out).counts
    assert counts["processed"] == 0 and counts["reused"] == 12

    # Simulate a kill: two outputs lost, and the journal's last line torn mid-write.
    lost = [lines[0]["audio_filepath"], lines[5]["audio_filepath"]]
    for name in lost:
        (out / name).unlink()
    journal = out / ".manifest-00000-of-00001.journal"
    records = journal.read_text().splitlines()
    torn = [r for r in records if '"line"' in r][-1]
    torn_name = json.loads(torn)["line"]["audio_filepath"]
    journal.write_text("\n".join(r for r in records if r != torn) + "\n" + torn[: len(torn) // 2])
    manifest_path.unlink()

    marco_trainer(*args)
    counts = read_stage_result(out).counts
    redone = {*lost, torn_name}
    assert counts["processed"] == len(redone) and counts["reused"] == 12 - len(redone)
    assert counts["skipped"] == len(BAD_REASONS) + 1  # refusals remembered, not retried
    after = [json.loads(x) for x in manifest_path.read_text().splitlines()]
    assert [x["audio_filepath"] for x in after] == [x["audio_filepath"] for x in lines]
    for name, data in before.items():
        assert (out / name).read_bytes() == data  # recomputed outputs are identical
        if name not in redone:
            assert (out / name).stat().st_mtime_ns == stamps[name]


def test_profile_counts_bad_files_and_shards_merge_to_one(corpus, tmp_path, marco_trainer):
    data = tmp_path / "data"
    shutil.copytree(corpus / "target", data)
    _bad_files(data)
    one, three = tmp_path / "one", tmp_path / "three"
    marco_trainer("profile", "--input", data, "--output-dir", one)
    for i in range(3):
        marco_trainer(
            "profile", "--input", data, "--output-dir", three, "--shard-index", i, "--num-shards", 3
        )
    single = load_profile(one)
    assert single == load_profile(three) == load_profile(three / "profile.json")
    assert single.files == 6
    expected = {r: 1 for n, r in BAD_REASONS.items() if n != "missing.wav"}
    assert single.skipped == expected
    counts = read_stage_result(three).counts
    assert counts["processed"] == 6 and counts["skipped"] == len(expected)
    assert all(counts[f"skipped:{reason}"] == 1 for reason in expected)


def test_a_killed_shard_resumes_where_it_stopped(corpus, tmp_path):
    """A real SIGKILL in the middle of a run; the rerun redoes only what was not recorded."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "aug"
    args = [
        sys.executable,
        "-m",
        "marco_trainer",
        "augment",
        "--manifest",
        str(corpus / "source" / "source.jsonl"),
        "--output-dir",
        str(out),
        "--preset",
        "telephony",
        "--copies",
        "40",
        "--seed",
        "1",
    ]
    journal = out / ".manifest-00000-of-00001.journal"
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if journal.exists() and journal.read_text().count("\n") >= 5:
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (out / "manifest-00000-of-00001.jsonl").exists()
    recorded = journal.read_text().count('"line"')

    subprocess.run(args, check=True, capture_output=True)
    counts = read_stage_result(out).counts
    assert counts["reused"] >= recorded - 1  # a line torn by the kill is redone
    assert counts["reused"] + counts["processed"] == 240
    assert counts["processed"] < 240
    lines = (out / "manifest-00000-of-00001.jsonl").read_text().splitlines()
    assert len(lines) == 240
    for line in lines:  # every listed file is whole (atomic writes)
        assert sf.info(str(out / json.loads(line)["audio_filepath"])).frames > 0
