"""A repeated manifest line (same audio, same text) counts once with the filter off too."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import soundfile as sf

from marco_contract.results import read_stage_result
from marco_trainer.audio.profile import load_profile
from tests.tools import checkout_env


def _run(*args) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "marco_trainer", *map(str, args)],
        env=checkout_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]


def _data(tmp_path):
    rate = 16000
    t = np.arange(2 * rate) / rate
    for i, hz in enumerate((300, 500)):
        gated = (np.sin(2 * np.pi * 2 * t) > 0) * np.sin(2 * np.pi * hz * t)  # pauses, for SNR
        sf.write(tmp_path / f"u{i}.wav", 0.3 * gated, rate)
    lines = [
        {"audio_filepath": "u0.wav", "text": "first line here"},
        {"audio_filepath": "u1.wav", "text": "second line here"},
        {"audio_filepath": "u0.wav", "text": "first line here"},  # pasted twice
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return manifest


def test_augment_and_profile_read_a_repeated_line_once(tmp_path):
    manifest = _data(tmp_path)
    augmented = tmp_path / "augmented"
    _run("augment", "--manifest", manifest, "--output-dir", augmented, "--preset", "telephony",
         "--copies", 2, "--seed", 1)  # fmt: skip
    (out,) = augmented.glob("manifest-*.jsonl")
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(x["text"] for x in lines) == ["first line here"] * 2 + ["second line here"] * 2
    counts = read_stage_result(augmented).counts
    assert counts["skipped:duplicate_line"] == 1 and counts["outputs"] == 4

    profiled = tmp_path / "profile"
    _run("profile", "--input", manifest, "--output-dir", profiled)
    profile = load_profile(profiled)
    assert profile.files == 2 and profile.skipped == {"duplicate_line": 1}


def test_sharded_stages_count_a_manifest_problem_once_not_once_a_shard(tmp_path):
    """Every shard reads every manifest; only one of them counts what is wrong in it."""
    manifest = _data(tmp_path)
    with manifest.open("a") as handle:
        handle.write('{"text": "a line without audio"}\n')
    augmented, profiled = tmp_path / "augmented", tmp_path / "profile"
    for index in range(2):
        shard = ("--shard-index", index, "--num-shards", 2)
        _run("augment", "--manifest", manifest, "--output-dir", augmented,
             "--preset", "telephony", "--seed", 1, *shard)  # fmt: skip
        _run("profile", "--input", manifest, "--output-dir", profiled, *shard)
    counts = read_stage_result(augmented).counts
    assert counts["skipped:duplicate_line"] == counts["skipped:bad_manifest_line"] == 1
    assert counts["skipped"] == 2 and counts["outputs"] == 2
    profile = load_profile(profiled)
    assert profile.files == 2
    assert profile.skipped == {"bad_manifest_line": 1, "duplicate_line": 1}
