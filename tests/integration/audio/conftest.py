"""A small clean corpus and a telephony-like target, made here with flite/espeak-ng and sox."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from marco_demo.synth import Voice, speak
from tests.tools import checkout_env

SOURCE_LINES = (
    ("please hold while i transfer your call", Voice("flite", "kal16")),
    ("your account balance is forty two dollars", Voice("flite", "slt")),
    ("thank you for calling customer service", Voice("espeak-ng", "en-us")),
    ("i would like to cancel my subscription", Voice("flite", "awb")),
    ("can you repeat the order number please", Voice("flite", "rms")),
    ("the technician will arrive tomorrow morning", Voice("flite", "kal16")),
)
TARGET_LINES = (
    ("my internet has been down since monday", Voice("flite", "slt")),
    ("i never received the replacement card", Voice("flite", "kal16")),
    ("could you check the status of my refund", Voice("espeak-ng", "en-us")),
    ("the line keeps dropping during calls", Voice("flite", "rms")),
    ("yes that is the correct address", Voice("flite", "awb")),
    ("i am calling about my last invoice", Voice("flite", "kal16")),
)


def _sox(*args: str) -> None:
    subprocess.run(["sox", *args], check=True, capture_output=True)


def write_manifest(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@pytest.fixture(scope="session")
def make_manifest():
    """Write dicts as a JSONL manifest: ``make_manifest(path, lines) -> path``."""
    return write_manifest


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """``source/`` (clean 16 kHz speech + ``source.jsonl``) and ``target/`` (8 kHz μ-law and
    GSM telephone audio: band-passed 300–3400 Hz with white noise, no transcripts)."""
    root = tmp_path_factory.mktemp("corpus")
    lines = []
    for i, (text, voice) in enumerate(SOURCE_LINES):
        speak(text, root / "source" / f"utt{i}.wav", voice)
        lines.append({"audio_filepath": f"utt{i}.wav", "text": text, "language": "en"})
    write_manifest(root / "source" / "source.jsonl", lines)
    (root / "target").mkdir()
    for i, (text, voice) in enumerate(TARGET_LINES):
        clean = speak(text, root / "work" / f"clean{i}.wav", voice, sample_rate=8000)
        noise = root / "work" / f"noise{i}.wav"
        seconds = sf.info(str(clean)).duration
        level = str(0.004 + 0.004 * i)
        _sox(
            "-n",
            "-r",
            "8000",
            "-c",
            "1",
            "-b",
            "16",
            str(noise),
            "synth",
            str(seconds),
            "whitenoise",
            "vol",
            level,
        )
        if i % 2:
            out, encoding = root / "target" / f"call{i}.gsm", []
        else:
            out, encoding = root / "target" / f"call{i}.wav", ["-e", "u-law"]
        _sox(
            "-m",
            str(clean),
            str(noise),
            *encoding,
            "-r",
            "8000",
            str(out),
            "sinc",
            "300-3400",
            "vol",
            "0.5",
        )
    return root


@pytest.fixture(scope="session")
def marco_trainer():
    """Run the CLI as a user would; returns the completed process (asserts exit 0 unless told)."""

    def run(*args: str, expect: int = 0) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, "-m", "marco_trainer", *map(str, args)],
            env=checkout_env(),
            capture_output=True,
            text=True,
        )
        assert done.returncode == expect, done.stderr[-3000:]
        return done

    return run
