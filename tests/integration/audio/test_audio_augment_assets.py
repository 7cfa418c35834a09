"""A user's RIR and noise directories, and --keep-original."""

from __future__ import annotations

import json

import numpy as np
import soundfile as sf

from marco_contract.exit_codes import BAD_INPUT
from marco_trainer.audio.assets import simulate_rirs
from marco_trainer.audio.features import FileMetrics, estimate_snr
from marco_trainer.audio.profile import build_profile


def test_user_rirs_noises_and_originals(corpus, tmp_path, marco_trainer):
    # A noisy target (μ_SNR 3 dB): every utterance is reverberated (p_rev = 1).
    records = [
        FileMetrics(
            path=f"t{i}.wav",
            sample_rate=16000,
            bit_depth=16,
            subtype="PCM_16",
            channels=1,
            duration_s=3.0,
            snr_db=2.0 + i,
            lufs=-26.0 - i,
            centroid_hz=1500.0 + 50 * i,
            rolloff_hz=3000.0 + 100 * i,
        )
        for i in range(3)
    ]
    profile = tmp_path / "noisy.json"
    profile.write_text(build_profile(records).model_dump_json())
    rirs, noises = tmp_path / "rirs", tmp_path / "noises"
    rirs.mkdir()
    noises.mkdir()
    sf.write(rirs / "hall.wav", simulate_rirs(1, 16000, seed=4)[0], 16000, subtype="FLOAT")
    hiss = 0.05 * np.random.default_rng(0).standard_normal(16000 * 5)
    sf.write(noises / "hiss.flac", hiss, 16000)

    out = tmp_path / "aug"
    marco_trainer(
        "augment",
        "--manifest",
        corpus / "source" / "source.jsonl",
        "--output-dir",
        out,
        "--profile",
        profile,
        "--rir-dir",
        rirs,
        "--noise-dir",
        noises,
        "--keep-original",
        "--seed",
        2,
    )
    lines = [
        json.loads(x) for x in (out / "manifest-00000-of-00001.jsonl").read_text().splitlines()
    ]
    augmented = [x for x in lines if x["augmentation"]]
    originals = [x for x in lines if x["augmentation"] is None]
    assert len(augmented) == len(originals) == 6
    for line in originals:
        assert (out / line["audio_filepath"]).resolve().is_file()
    for line in augmented:
        step = line["augmentation"]
        # A user's file: its RT60 is unknown, so no tail of that length is kept.
        assert step["reverb"] == {"rir_index": 0, "rt60_s": None, "tail_s": 0.0}
        assert step["noise"]["source"] == "file" and step["noise"]["index"] == 0
        audio, rate = sf.read(out / line["audio_filepath"], dtype="float32")
        assert estimate_snr(audio, rate) < 20


def test_bad_arguments_are_refused_naming_what_is_wrong(corpus, tmp_path, marco_trainer):
    manifest = corpus / "source" / "source.jsonl"
    done = marco_trainer(
        "augment",
        "--manifest",
        manifest,
        "--output-dir",
        tmp_path / "a",
        "--profile",
        tmp_path / "nowhere.json",
        expect=BAD_INPUT,
    )
    assert "nowhere.json" in done.stderr and "not found" in done.stderr
    (tmp_path / "broken.json").write_text('{"files": "many"}')
    done = marco_trainer(
        "augment",
        "--manifest",
        manifest,
        "--output-dir",
        tmp_path / "b",
        "--profile",
        tmp_path / "broken.json",
        expect=BAD_INPUT,
    )
    assert "files" in done.stderr
    done = marco_trainer(
        "augment",
        "--manifest",
        manifest,
        "--output-dir",
        tmp_path / "c",
        "--preset",
        "telephony",
        "--copies",
        0,
        expect=BAD_INPUT,
    )
    assert "--copies" in done.stderr
    done = marco_trainer(
        "profile", "--input", tmp_path / "absent", "--output-dir", tmp_path / "d", expect=BAD_INPUT
    )
    assert "absent" in done.stderr
