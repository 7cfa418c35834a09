"""`marco-trainer filter` refuses, with a reason, files that are no training utterance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from marco_contract.results import read_stage_result
from tests.tools import checkout_env

RATE = 16000


def _tone(path: Path, hz: float, seconds: float = 2.0, rate: int = RATE, channels: int = 1):
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * hz * t)
    sf.write(path, np.stack([wave] * channels, axis=1) if channels > 1 else wave, rate)
    return path


def _filter(manifest: Path, out: Path, *flags: str, expect: int = 0):
    """The filter as a user runs it, under a timeout (a stage that hangs fails the test)."""
    done = subprocess.run(
        [sys.executable, "-m", "marco_trainer", "filter", "--manifest", str(manifest),
         "--output-dir", str(out), *flags],
        env=checkout_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == expect, done.stderr[-3000:]
    return done


def _reasons(out: Path) -> dict[str, str]:
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    return {Path(r["audio_filepath"]).name: r["reason"] for r in rejects if "audio_filepath" in r}


def _kept(out: Path) -> list[str]:
    return [
        Path(json.loads(x)["audio_filepath"]).name
        for x in (out / "kept.jsonl").read_text().splitlines()
    ]


def _manifest(path: Path, names: list[str], text: str = "hello there world") -> Path:
    path.write_text("".join(json.dumps({"audio_filepath": n, "text": text}) + "\n" for n in names))
    return path


def test_filter_refuses_a_fifo_a_constant_and_an_8_hz_file(tmp_path):
    _tone(tmp_path / "good.wav", 440)
    os.mkfifo(tmp_path / "pipe.wav")  # opening it would wait for a writer forever
    sf.write(tmp_path / "dc.wav", np.full(2 * RATE, 0.25), RATE)
    sf.write(tmp_path / "8hz.wav", 0.3 * np.sin(np.arange(16)), 8)  # 2 s at 8 Hz
    manifest = _manifest(tmp_path / "m.jsonl", ["good.wav", "pipe.wav", "dc.wav", "8hz.wav"])
    out = tmp_path / "filtered"
    _filter(manifest, out)
    assert _kept(out) == ["good.wav"]
    assert _reasons(out) == {
        "pipe.wav": "not_regular_file",
        "dc.wav": "dc_only",
        "8hz.wav": "sample_rate_too_low",
    }
    counts = read_stage_result(out).counts
    assert counts["rejected:dc_only"] == counts["rejected:sample_rate_too_low"] == 1


def test_filter_rejects_an_over_long_file_by_its_header_without_decoding_it(tmp_path):
    import tracemalloc

    from marco_trainer.cli import main

    seconds, rate = 120, 48000
    with sf.SoundFile(tmp_path / "long.wav", "w", rate, 2, "PCM_16") as handle:
        second = 0.3 * np.sin(2 * np.pi * 300 * np.arange(rate) / rate)
        for _ in range(seconds):  # a second at a time: the test never holds the file
            handle.write(np.stack([second, second], axis=1))
    decoded = seconds * rate * 2 * 4  # bytes of its float32 samples: 46 MB
    _tone(tmp_path / "good.wav", 440)
    manifest = _manifest(tmp_path / "m.jsonl", ["long.wav", "good.wav"])
    out = tmp_path / "filtered"
    tracemalloc.start()  # numpy reports its buffers to tracemalloc
    try:
        assert main(["filter", "--manifest", str(manifest), "--output-dir", str(out),
                     "--max-duration", "10"]) == 0  # fmt: skip
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert _kept(out) == ["good.wav"]
    assert _reasons(out) == {"long.wav": "too_long"}
    assert peak < decoded / 4, f"the filter held {peak / 1e6:.0f} MB to reject the file"


def test_a_filter_that_keeps_nothing_fails_with_the_counts_by_reason(tmp_path):
    _tone(tmp_path / "short.wav", 440, seconds=0.1)
    sf.write(tmp_path / "dc.wav", np.full(2 * RATE, 0.25), RATE)
    _tone(tmp_path / "quiet.wav", 500)
    lines = [
        {"audio_filepath": "short.wav", "text": "hi"},
        {"audio_filepath": "dc.wav", "text": "hello there world"},
        {"audio_filepath": "quiet.wav", "text": ""},
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines) + "{not json}\n")
    out = tmp_path / "filtered"
    done = _filter(manifest, out, expect=1)  # the stage fails: nothing to train on
    assert _kept(out) == []
    result = read_stage_result(out)
    assert result is not None and not result.ok
    assert result.counts["kept"] == 0 and result.counts["rejected"] == 4
    expected = (
        "no utterance kept: 4 rejected (bad_manifest_line 1, dc_only 1, empty_text 1, too_short 1)"
    )
    assert result.message == expected
    # A local run's failed stage shows the log's last line: it is the reason.
    assert done.stderr.strip().splitlines()[-1] == f"marco-trainer filter: {expected}"


def test_filter_keeps_line_one_after_a_bom_and_skips_a_line_that_is_not_utf8(tmp_path):
    _tone(tmp_path / "a.wav", 440)
    _tone(tmp_path / "b.wav", 550)
    _tone(tmp_path / "c.wav", 660)
    manifest = tmp_path / "m.jsonl"
    manifest.write_bytes(
        b"\xef\xbb\xbf"  # a byte-order mark, as Windows editors write
        b'{"audio_filepath": "a.wav", "text": "hello there world"}\n'
        b'{"audio_filepath": "b.wav", "text": "caf\xe9 au lait"}\n'  # Latin-1, not UTF-8
        b'{"audio_filepath": "c.wav", "text": "hello again world"}\n'
    )
    out = tmp_path / "filtered"
    _filter(manifest, out)
    assert _kept(out) == ["a.wav", "c.wav"]
    (bad,) = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    assert bad["reason"] == "bad_manifest_line" and bad["line"] == 2
    assert bad["detail"].startswith(f"{manifest}:2: not UTF-8")
    assert read_stage_result(out).counts["rejected:bad_manifest_line"] == 1
