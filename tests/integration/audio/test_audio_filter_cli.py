"""`marco-trainer filter` keeps what a model can learn from and says why it drops the rest."""

from __future__ import annotations

import json
import shutil

import numpy as np
import soundfile as sf

from marco_contract.results import read_stage_result


def test_filter_rejects_with_reasons(corpus, tmp_path, marco_trainer, make_manifest):
    data = tmp_path / "data"
    shutil.copytree(corpus / "source", data)
    shutil.copy(data / "utt1.wav", data / "copy-of-utt1.wav")
    sf.write(data / "blip.wav", 0.3 * np.sin(np.arange(1600) / 5), 16000)
    (data / "broken.wav").write_bytes(b"RIFF....WAVEjunk")
    lines = [
        {"audio_filepath": "utt0.wav", "text": "please hold while i transfer your call"},
        {"audio_filepath": "utt1.wav", "text": "your account balance is forty two dollars"},
        {"audio_filepath": "utt0.wav", "text": "please hold while i transfer your call"},
        {"audio_filepath": "copy-of-utt1.wav", "text": "your account balance"},
        {"audio_filepath": "blip.wav", "text": "hi"},
        {"audio_filepath": "utt2.wav", "text": ""},
        {"audio_filepath": "utt3.wav", "text": "cancel " * 200},
        {"audio_filepath": "utt4.wav", "text": "x" * 150},
        {"audio_filepath": "broken.wav", "text": "broken"},
    ]
    make_manifest(data / "all.jsonl", lines)
    out = tmp_path / "filtered"
    marco_trainer(
        "filter",
        "--manifest",
        data / "all.jsonl",
        "--output-dir",
        out,
        "--max-text-tokens",
        300,
        "--max-chars-per-second",
        25,
    )
    kept = [json.loads(x) for x in (out / "kept.jsonl").read_text().splitlines()]
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    assert [k["audio_filepath"].rsplit("/", 1)[-1] for k in kept] == ["utt0.wav", "utt1.wav"]
    assert all(k["duration"] > 1 for k in kept)
    assert (out / kept[0]["audio_filepath"]).exists()  # paths stay valid from the new folder
    reasons = {
        r["audio_filepath"].rsplit("/", 1)[-1] + f":{r['text'][:6]}": r["reason"] for r in rejects
    }
    broken = reasons.pop("broken.wav:broken")
    assert broken in {"unreadable", "unsupported_format"}  # libsndfile's word for it varies
    assert reasons == {
        "utt0.wav:please": "duplicate_path",  # the second line naming utt0.wav
        "copy-of-utt1.wav:your a": "duplicate_audio",
        "blip.wav:hi": "too_short",
        "utt2.wav:": "empty_text",
        "utt3.wav:cancel": "text_too_long",
        "utt4.wav:xxxxxx": "chars_per_second_high",
    }
    assert all(r["detail"] for r in rejects)
    counts = read_stage_result(out).counts
    assert counts["kept"] == 2 and counts["rejected"] == 7
    assert counts["rejected:duplicate_audio"] == 1 and counts["rejected:too_short"] == 1
