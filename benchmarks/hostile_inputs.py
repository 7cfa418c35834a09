"""Hostile inputs (issue 13): invalid specs through both admission layers, odd audio files
and manifest lines through the real filter stage; the docs' table comes from here.

Run: ``PYTHONPATH=contract:operator:trainer:demo .venv/bin/python benchmarks/hostile_inputs.py``
(``--details`` adds a row per kind). tests/unit/test_hostile_inputs.py runs the same
catalogues as the regression test.

1. **Specs.** Each kind is the Whisper example with a few changes, and the field it is
   about, written here. Both layers judge it: pydantic (``api.parse_spec``, and
   ``api.name_problem`` for ``metadata.name``: what the operator and ``marco run`` apply)
   and the CRD (its OpenAPI schema and CEL rules, as the API server applies them:
   ``tests/crd_check.py``, under kubectl's ``fieldValidation=Strict``). A kind passes when
   both refuse it and each message names the field: the field itself (``resources.memory``)
   or, for a rule on an object, the object's path and the field's name
   (``spec.training: cycleSteps must be...``).
2. **Audio files and manifest lines.** Each kind is a manifest on a data volume (a good
   line first, then the odd one; or an odd manifest file beside a good one), run through
   ``marco-trainer filter`` with ``--data-root``/``--output-root`` as a stage pod runs it
   (in this process, through the trainer's own argument parser, under a time limit). Its
   outcome is read from what the stage wrote: the odd line *skipped* with a reason in
   ``rejects.jsonl``, *handled* (kept: the filter measured it and it is usable), the run
   *refused* (exit 3, ``marco_contract.exit_codes.BAD_INPUT``, the message naming the
   manifest), or *crashed* (an exception, another exit status, a hang). The outcome each
   kind should have is written in the catalogue.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # tests.crd_check: the CRD's schema and CEL, offline

from pydantic import ValidationError  # noqa: E402

from marco_contract.exit_codes import BAD_INPUT  # noqa: E402
from marco_operator.api import describe_error, name_problem, parse_spec  # noqa: E402
from tests.crd_check import validate_against_crd  # noqa: E402

EXAMPLE = ROOT / "examples" / "whisper-large-v3-telephony.yaml"
DELETE = object()  # a change that removes the field

# ------------------------------------------------------------------------------ specs


@dataclass(frozen=True)
class SpecKind:
    name: str
    group: str
    field: str  # the field the kind is about (dotted camelCase under spec, or metadata.name)
    changes: tuple[tuple[str, Any], ...]  # (dotted path from the object's root, value)


def _spec(name: str, group: str, field_: str, *changes: tuple[str, Any]) -> SpecKind:
    return SpecKind(name, group, field_, changes)


def _one(group: str, path: str, value: Any, name: str | None = None) -> SpecKind:
    """A kind that sets one spec field, the field it is about."""
    return SpecKind(name or f"{path} = {value!r}"[:70], group, path, ((f"spec.{path}", value),))


#: Every object of the spec, where an unknown field is tried (a typo of a real one mostly).
UNKNOWN_AT = {
    "": "modle",
    "model": "sourse",
    "model.lora": "rank",
    "data": "trian",
    "filter": "maxDurationSeconds",
    "profile": "shard",
    "augmentation": "copys",
    "baseline": "sample",
    "trials": "counts",
    "training": "maxStep",
    "training.learningRate": "maximum",
    "training.earlyStopping": "patient",
    "evaluation": "enable",
    "decoding": "beamSize",
    "resources": "gpus",
    "resources.stageDeadlineSeconds": "training",
    "output": "mountpath",
}

SPEC_KINDS: list[SpecKind] = [
    # metadata.name: children are <name>-<stage>, pods <name>-<stage>-<i>, a Service <name>-train.
    *(
        SpecKind(f"name {value!r}"[:70], "name", "metadata.name", (("metadata.name", value),))
        for value in (
            "Whisper", "whisper_telephony", "1whisper", "whisper-", "-whisper", "whisper.v3",
            "whisper telephony", "whisperé", "w" * 46,
        )
    ),
    # Paths that leave their volume, or name it whole.
    _one("path", "data.train", ["../../etc/shadow.jsonl"]),
    _one("path", "data.train", ["train.jsonl", "/etc/passwd"]),
    _one("path", "data.train", [""]),
    _one("path", "data.validation", "/etc/passwd"),
    _one("path", "data.validation", "a/../../b.jsonl"),
    _one("path", "data.test", "/data/../etc/test.jsonl"),
    _one("path", "data.test", "."),
    _one("path", "data.targetAudio", "/database/calls/"),
    _one("path", "model.source", "/etc/models/whisper"),
    _one("path", "model.source", "org/name/extra"),
    _one("path", "model.source", "../models/whisper"),
    _one("path", "augmentation.rirPath", "/usr/share/rirs"),
    _one("path", "augmentation.noisePath", "../noise"),
    _one("path", "output.path", "/srv/out"),
    _one("path", "output.path", "../../escape"),
    _one("path", "output.path", "./"),
    _one("path", "data.mountPath", "/"),
    _one("path", "data.mountPath", "data"),
    _one("path", "output.mountPath", "/out/../etc"),
    # Absurd numbers: above every sane bound, or below the least.
    _one("number", "training.maxSteps", 10**12),
    _one("number", "training.maxSteps", 0),
    _one("number", "training.evalSamples", 10**9),
    _one("number", "training.perDeviceBatchSize", 10**6),
    _one("number", "training.gradientAccumulation", 10**6),
    _one("number", "training.seed", 2**40),
    _one("number", "training.stopGracePeriodSeconds", 10**9),
    _one("number", "resources.nodes", 10**4),
    _one("number", "resources.nodes", 0),
    _one("number", "resources.gpusPerNode", 1000),
    _one("number", "resources.backoffLimit", 10**6),
    _one("number", "resources.stageDeadlineSeconds.train", 10**10),
    _one("number", "augmentation.copies", 10**6),
    _one("number", "profile.shards", 10**5),
    _one("number", "baseline.samples", 10**9),
    _one("number", "trials.count", 1000),
    _one("number", "filter.maxDuration", 1e9),
    _one("number", "filter.minDuration", -1.0),
    _one("number", "training.sigmaRef", 0),
    # Learning-rate bounds (Eq. 1 and 2 must stay positive and finite).
    _one("lr", "training.learningRate", {"min": 1e-5, "max": 1e-7}, "learningRate upside down"),
    _one("lr", "training.learningRate", {"min": 1e-5, "max": 1e-5}, "learningRate min = max"),
    _one("lr", "training.learningRate.min", 0.0),
    _one("lr", "training.learningRate.max", 2.0),
    _one("lr", "training.learningRate", {"min": 1e-20, "max": 1e-3}, "learningRate min 1e-20"),
    _one("lr", "training.learningRate", {"min": 1e-12, "max": 1.0}, "learningRate ratio 1e12"),
    _one("lr", "training.initialLearningRate", 1e-3, "initialLearningRate outside bounds"),
    _spec(
        "trials.learningRates outside bounds", "lr", "trials.learningRates",
        ("spec.trials.enabled", True), ("spec.trials.learningRates", [1e-6, 1e-2]),
    ),
    # Resource quantities (k8s.io/apimachinery resource.Quantity).
    _one("quantity", "resources.memory", "lots"),
    _one("quantity", "resources.memory", "-32Gi"),
    _one("quantity", "resources.memory", "0"),
    _one("quantity", "resources.memory", "32gi"),
    _one("quantity", "resources.memory", "32 Gi"),
    _one("quantity", "resources.cpu", "four"),
    _one("quantity", "resources.cpu", "2.5cpu"),
    _one("quantity", "resources.cpu", ""),
    _one("quantity", "resources.sharedMemory", "8GB"),
    _one("quantity", "resources.sharedMemory", "1e"),
    # Mount paths: two in one place, one in another, one over a folder the pod needs.
    _spec(
        "data and output both at /data", "mount", "output.mountPath",
        ("spec.data.mountPath", "/data"), ("spec.output.mountPath", "/data"),
    ),
    _one("mount", "output.mountPath", "/data/out", "output inside data"),
    _spec(
        "data inside output", "mount", "output.mountPath",
        ("spec.data.mountPath", "/srv/out/data"), ("spec.output.mountPath", "/srv/out"),
    ),
    _one("mount", "output.mountPath", "/home/marco", "output over the trainer's HOME"),
    _one("mount", "output.mountPath", "/home/marco/.cache", "output over the image's cache"),
    _one("mount", "output.mountPath", "/dev/shm", "output over /dev/shm"),
    _one("mount", "data.mountPath", "/opt/marco", "data over the trainer's Python"),
    _one("mount", "data.mountPath", "/etc", "data over /etc"),
    # Unknown fields, at every level of the spec.
    *(
        SpecKind(
            f"unknown {(at + '.' if at else '') + typo}", "unknown",
            (at + "." if at else "") + typo,
            ((f"spec.{at}.{typo}" if at else f"spec.{typo}", 1),),
        )
        for at, typo in UNKNOWN_AT.items()
    ),
    _spec(
        "unknown resources.tolerations[0].tolerationSecond", "unknown",
        "resources.tolerations[0].tolerationSecond",
        ("spec.resources.tolerations", [{"key": "gpu", "tolerationSecond": 5}]),
    ),
    # Wrong types.
    _one("type", "training.maxSteps", "4000"),
    _one("type", "training.maxSteps", 4000.5),
    _one("type", "filter.enabled", "true"),
    _one("type", "resources.memory", 32),
    _one("type", "model.source", 5),
    _one("type", "data.train", "commonvoice/en/train.jsonl"),
    _one("type", "resources.nodeSelector", ["gpu"]),
    _one("type", "training.learningRate", 1e-5),
    _one("type", "augmentation.preset", "studio"),
    _one("type", "training.earlyStopping.mode", "sometimes"),
    # Stages without their input, and other cross-field rules.
    _spec("profile without targetAudio", "rule", "profile.enabled",
          ("spec.data.targetAudio", DELETE)),
    _spec("profile preset with profiling off", "rule", "augmentation.preset",
          ("spec.profile.enabled", False)),
    _spec("evaluation without test", "rule", "evaluation.enabled", ("spec.data.test", DELETE)),
    _spec("cleanSourceShare without augmentation", "rule", "training.cleanSourceShare",
          ("spec.training.cleanSourceShare", 0.5), ("spec.augmentation.enabled", False)),
    _spec("minDuration above maxDuration", "rule", "filter.minDuration",
          ("spec.filter.minDuration", 20.0), ("spec.filter.maxDuration", 10.0)),
    _spec("cycleSteps under 2 x evalEvery", "rule", "training.cycleSteps",
          ("spec.training.cycleSteps", 60), ("spec.training.evalEvery", 50)),
    _spec("fallback without a trigger", "rule", "temperatureFallback",
          ("spec.decoding.compressionRatioThreshold", 0)),
    # Required fields missing.
    _spec("model.source missing", "missing", "model.source", ("spec.model.source", DELETE)),
    _spec("data.validation missing", "missing", "data.validation",
          ("spec.data.validation", DELETE)),
    _one("missing", "data.train", [], "data.train empty"),
]  # fmt: skip

SPEC_GROUPS = {
    "name": "metadata.name not a DNS-1035 label of at most 45 characters",
    "path": "a path leaving its volume, or naming it whole",
    "number": "an absurd number (above the bound, or below the least)",
    "lr": "learning-rate bounds Eq. 1 and 2 cannot use",
    "quantity": "a resource quantity that is no Kubernetes quantity",
    "mount": "mount paths that collide, or hide a folder the pod needs",
    "unknown": "an unknown field, at every level",
    "type": "a value of the wrong type",
    "rule": "a stage without its input, and other cross-field rules",
    "missing": "a required field missing or empty",
}


def spec_object(kind: SpecKind) -> dict[str, Any]:
    obj = yaml.safe_load(EXAMPLE.read_text())
    for path, value in kind.changes:
        *parents, leaf = path.split(".")
        node = obj
        for name in parents:
            node = node.setdefault(name, {})
        if value is DELETE:
            node.pop(leaf, None)
        else:
            node[leaf] = copy.deepcopy(value)
    return obj


def names_field(message: str, field_: str) -> bool:
    """``message`` names ``field_``: the field itself, or the object's path and the name of
    the field (a rule on an object: "spec.training: cycleSteps must be ...")."""
    if field_ in message:
        return True
    parent, _, leaf = field_.rpartition(".")
    if parent:
        return f"spec.{parent}: " in message and leaf in message
    return f"spec: {field_}" in message


@dataclass
class SpecVerdict:
    kind: SpecKind
    pydantic: str | None  # the refusal, None when accepted
    crd: list[str]  # the refusals, empty when accepted

    @property
    def refused_by_both(self) -> bool:
        return self.pydantic is not None and bool(self.crd)

    @property
    def named_by_pydantic(self) -> bool:
        return self.pydantic is not None and names_field(self.pydantic, self.kind.field)

    @property
    def named_by_crd(self) -> bool:
        return any(names_field(failure, self.kind.field) for failure in self.crd)

    @property
    def ok(self) -> bool:
        return self.refused_by_both and self.named_by_pydantic and self.named_by_crd


def judge_spec(kind: SpecKind) -> SpecVerdict:
    obj = spec_object(kind)
    by_pydantic = name_problem(obj["metadata"]["name"])
    if by_pydantic is None:
        try:
            parse_spec(copy.deepcopy(obj["spec"]))
        except ValidationError as error:
            by_pydantic = describe_error(error)
    return SpecVerdict(kind, by_pydantic, validate_against_crd(obj))


# ------------------------------------------------------------------ audio and manifests

RATE = 16000
TEXT = "please hold while i transfer your call"  # 32 spoken characters: 16 a second at 2 s
SKIPPED, HANDLED, REFUSED, CRASHED = "skipped", "handled", "refused", "crashed"


def tone(seconds: float = 2.0, rate: int = RATE, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A voiced-like sound: two harmonics and a little noise, distinct for each seed."""
    t = np.arange(round(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    x = 0.3 * np.sin(2 * np.pi * (180 + seed) * t) + 0.1 * np.sin(2 * np.pi * 720 * t)
    x = x + 0.01 * rng.standard_normal(t.size)
    return np.repeat(x[:, None], channels, axis=1).astype(np.float32)


@dataclass(frozen=True)
class FileKind:
    """An odd audio file or manifest.

    ``make(data)`` writes what it needs into the data volume ``data`` and returns the
    subject: the manifest lines to add after the good one (raw bytes each, no newline), or
    ``("file", path)`` for a manifest file of its own given to the stage beside the good
    one. ``expect`` is the outcome it should have: ``handled``, ``refused``, or
    ``skipped:<reason>`` (several accepted reasons joined by '|')."""

    name: str
    group: str  # audio or manifest
    expect: str
    make: Callable[[Path], Any]


def line(audio: str, text: str | None = TEXT, **extra: Any) -> bytes:
    data: dict[str, Any] = {"audio_filepath": audio, **extra}
    if text is not None:
        data["text"] = text
    return json.dumps(data, ensure_ascii=False).encode()


def wav(data: Path, name: str, samples: np.ndarray, rate: int = RATE, **kw: Any) -> bytes:
    sf.write(data / name, samples, rate, **kw)
    return line(name)


def _audio(name: str, expect: str, write: Callable[[Path], Any]) -> FileKind:
    def make(data: Path) -> list[bytes]:
        made = write(data)
        return made if isinstance(made, list) else [made]

    return FileKind(name, "audio", expect, make)


def _raw(data: Path, name: str, content: bytes) -> bytes:
    (data / name).write_bytes(content)
    return line(name)


def _truncated(data: Path) -> bytes:
    wav(data, "full.wav", tone(4.0, seed=3))  # 2 s remain: 16 characters a second
    raw = (data / "full.wav").read_bytes()
    (data / "truncated.wav").write_bytes(raw[: len(raw) // 2])
    (data / "full.wav").unlink()
    return line("truncated.wav")


def _header_only(data: Path) -> bytes:
    wav(data, "full.wav", tone(1.0, seed=4))
    (data / "header-only.wav").write_bytes((data / "full.wav").read_bytes()[:44])
    (data / "full.wav").unlink()
    return line("header-only.wav")


def _fifo(data: Path) -> bytes:
    os.mkfifo(data / "fifo.wav")
    return line("fifo.wav")


def _symlink_out(data: Path) -> bytes:
    outside = data.parent / "elsewhere.wav"
    sf.write(outside, tone(seed=5), RATE)
    (data / "link.wav").symlink_to(outside)
    return line("link.wav")


def _nan(data: Path) -> bytes:
    x = tone(seed=6)
    x[100] = np.nan
    return wav(data, "nan.wav", x, subtype="FLOAT")


def _inf(data: Path) -> bytes:
    x = tone(seed=7)
    x[100] = np.inf
    return wav(data, "inf.wav", x, subtype="FLOAT")


def _renamed(source_format: str, name: str, seed: int, **kw: Any) -> Callable[[Path], bytes]:
    def write(data: Path) -> bytes:
        sf.write(data / name, tone(seed=seed), RATE, format=source_format, **kw)
        return line(name)

    return write


AUDIO_KINDS: list[FileKind] = [
    # Usable, in the formats and shapes a corpus holds: the filter measures and keeps them.
    _audio("16 kHz mono PCM 16", HANDLED, lambda d: wav(d, "pcm16.wav", tone(seed=10))),
    _audio("8 kHz mu-law (telephony)", HANDLED,
           lambda d: wav(d, "ulaw.wav", tone(rate=8000, seed=11), 8000, subtype="ULAW")),
    _audio("8 kHz GSM 06.10", HANDLED,
           lambda d: wav(d, "gsm.wav", tone(rate=8000, seed=12), 8000, subtype="GSM610")),
    _audio("8 kHz IMA ADPCM", HANDLED,
           lambda d: wav(d, "adpcm.wav", tone(rate=8000, seed=13), 8000, subtype="IMA_ADPCM")),
    _audio("44.1 kHz stereo float", HANDLED,
           lambda d: wav(d, "stereo.wav", tone(rate=44100, channels=2, seed=14), 44100,
                         subtype="FLOAT")),
    _audio("48 kHz 24-bit", HANDLED,
           lambda d: wav(d, "pcm24.wav", tone(rate=48000, seed=15), 48000, subtype="PCM_24")),
    _audio("unsigned 8-bit", HANDLED,
           lambda d: wav(d, "u8.wav", tone(seed=16), subtype="PCM_U8", format="WAV")),
    _audio("FLAC", HANDLED, _renamed("FLAC", "speech.flac", 17)),
    _audio("Ogg Vorbis", HANDLED, _renamed("OGG", "speech.ogg", 18, subtype="VORBIS")),
    _audio("Sun .au", HANDLED, _renamed("AU", "speech.au", 19)),
    _audio("8 channels", HANDLED,
           lambda d: wav(d, "eight.wav", tone(channels=8, seed=20))),
    _audio("phase-inverted stereo (L = -R)", HANDLED,
           lambda d: wav(d, "inverted.wav",
                         np.concatenate([tone(seed=21), -tone(seed=21)], axis=1))),
    _audio("one silent channel", HANDLED,
           lambda d: wav(d, "one-side.wav",
                         np.concatenate([tone(seed=22), 0 * tone(seed=22)], axis=1))),
    _audio("very quiet (-60 dBFS)", HANDLED, lambda d: wav(d, "quiet.wav", tone(seed=23) / 300)),
    _audio("DC offset under the sound", HANDLED,
           lambda d: wav(d, "offset.wav", tone(seed=24) * 0.5 + 0.4)),
    _audio("wrong extension (FLAC named .wav)", HANDLED, _renamed("FLAC", "flac.wav", 25)),
    _audio("wrong extension (WAV named .mp3)", HANDLED, _renamed("WAV", "wav.mp3", 26)),
    _audio("no extension", HANDLED, _renamed("WAV", "noext", 27)),
    _audio("truncated WAV (half its data)", HANDLED, _truncated),
    # Unusable: skipped, each with its reason.
    _audio("zero-length file", "skipped:unsupported_format|unreadable",
           lambda d: _raw(d, "zero.wav", b"")),
    _audio("WAV header, no samples", "skipped:empty", _header_only),
    _audio("text named .wav", "skipped:unsupported_format",
           lambda d: _raw(d, "text.wav", b"not audio at all")),
    _audio("random bytes", "skipped:unsupported_format|unreadable",
           lambda d: _raw(d, "noise.wav", np.random.default_rng(1).bytes(4096))),
    _audio("broken RIFF header", "skipped:unsupported_format|unreadable",
           lambda d: _raw(d, "riff.wav", b"RIFF....WAVEjunk")),
    _audio("FIFO named .wav", "skipped:not_regular_file", _fifo),
    _audio("directory named .wav", "skipped:not_regular_file",
           lambda d: (d / "dir.wav").mkdir() or line("dir.wav")),
    _audio("missing file", "skipped:missing", lambda d: line("nowhere.wav")),
    _audio("broken symlink", "skipped:missing",
           lambda d: (d / "dangling.wav").symlink_to(d / "gone.wav") or line("dangling.wav")),
    _audio("symlink leading off the volume", "skipped:outside_volume", _symlink_out),
    _audio("DC only (a constant level)", "skipped:dc_only",
           lambda d: wav(d, "dc.wav", np.full(RATE * 2, 0.5, dtype=np.float32))),
    _audio("digital silence", "skipped:silent",
           lambda d: wav(d, "silence.wav", np.zeros(RATE * 2, dtype=np.float32))),
    _audio("near silence (-90 dBFS)", "skipped:silent",
           lambda d: wav(d, "hush.wav", tone(seed=28) / 30000, subtype="FLOAT")),
    _audio("8 Hz sample rate", "skipped:sample_rate_too_low",
           lambda d: wav(d, "8hz.wav", tone(seconds=2, rate=8, seed=29), 8)),
    _audio("4 kHz sample rate", "skipped:sample_rate_too_low",
           lambda d: wav(d, "4khz.wav", tone(rate=4000, seed=30), 4000)),
    _audio("clipped square wave", "skipped:clipped",
           lambda d: wav(d, "square.wav", np.sign(tone(seed=31)))),
    _audio("NaN samples", "skipped:unreadable", _nan),
    _audio("infinite samples", "skipped:unreadable", _inf),
    _audio("10 ms", "skipped:too_short", lambda d: wav(d, "blip.wav", tone(0.01, seed=32))),
    _audio("0.2 s", "skipped:too_short", lambda d: wav(d, "short.wav", tone(0.2, seed=33))),
    _audio("over-long (40 s)", "skipped:too_long",
           lambda d: wav(d, "long.wav", tone(40.0, rate=8000, seed=34), 8000)),
    _audio("the good file's samples again", "skipped:duplicate_audio",
           lambda d: _raw(d, "copy.wav", (d / "good.wav").read_bytes())),
]  # fmt: skip


def _file(name: str, expect: str, write: Callable[[Path], Path]) -> FileKind:
    return FileKind(name, "manifest", expect, lambda d: ("file", write(d)))


def _lines(name: str, expect: str, *subject: bytes) -> FileKind:
    return FileKind(name, "manifest", expect, lambda d: list(subject))


def _write(name: str, content: bytes) -> Callable[[Path], Path]:
    def write(data: Path) -> Path:
        (data / name).write_bytes(content)
        return data / name

    return write


def _outside_manifest(data: Path) -> Path:
    outside = data.parent / "elsewhere.jsonl"
    outside.write_bytes(line(str(data / "good.wav")) + b"\n")
    (data / "linked.jsonl").symlink_to(outside)
    return data / "linked.jsonl"


def _fifo_manifest(data: Path) -> Path:
    os.mkfifo(data / "fifo.jsonl")
    return data / "fifo.jsonl"


def _empty_dir(data: Path) -> Path:
    (data / "shards").mkdir()
    return data / "shards"


MANIFEST_KINDS: list[FileKind] = [
    # Lines that are usable after all.
    _lines("extra fields", HANDLED, line("good2.wav", speaker="a", snr=12.5)),
    _lines("a duration that lies (1000 s for 2 s)", HANDLED, line("good2.wav", duration=1000.0)),
    _lines("a blank and a whitespace-only line", HANDLED, b"", b"   \t", line("good2.wav")),
    _lines("CRLF line end", HANDLED, line("good2.wav") + b"\r"),
    _lines("absolute path on the volume", HANDLED, line("{data}/good2.wav")),
    _lines("emoji and accents in the text", HANDLED,
           line("good2.wav", text="caf\u00e9 \u00fcber na\u00efve r\u00e9sum\u00e9 \U0001f600")),
    _file("a UTF-8 byte-order mark", HANDLED,
          _write("bom.jsonl", b"\xef\xbb\xbf" + line("good2.wav") + b"\n")),
    _file("an empty manifest", HANDLED, _write("empty.jsonl", b"")),
    # Lines skipped, each with its reason.
    _lines("invalid JSON", "skipped:bad_manifest_line", b'{"audio_filepath": "good2.wav", "te'),
    _lines("a JSON array", "skipped:bad_manifest_line", b'["good2.wav", "text"]'),
    _lines("JSON null", "skipped:bad_manifest_line", b"null"),
    _lines("a byte that is not UTF-8", "skipped:bad_manifest_line",
           line("good2.wav", text="caf\u00e9").replace(b"\xc3\xa9", b"\xe9")),
    _lines("no audio_filepath", "skipped:bad_manifest_line", b'{"text": "' + TEXT.encode() + b'"}'),
    _lines("an empty audio_filepath", "skipped:bad_manifest_line", line("")),
    _lines("a negative duration", "skipped:bad_manifest_line", line("good2.wav", duration=-2.0)),
    _lines("a duration in words", "skipped:bad_manifest_line",
           line("good2.wav", duration="two seconds")),
    _lines("a number for text", "skipped:bad_manifest_line",
           b'{"audio_filepath": "good2.wav", "text": 5}'),
    _lines("no text", "skipped:empty_text", line("good2.wav", text=None)),
    _lines("empty text", "skipped:empty_text", line("good2.wav", text="")),
    _lines("whitespace text", "skipped:empty_text", line("good2.wav", text=" \t ")),
    _lines("a transcript of 5000 characters", "skipped:text_too_long",
           line("good2.wav", text="cancel " * 700)),
    _lines("too few characters a second", "skipped:chars_per_second_low",
           line("good2.wav", text="a")),
    _lines("too many characters a second", "skipped:chars_per_second_high",
           line("good2.wav", text="x" * 150)),
    _lines("the same line twice", "skipped:duplicate_path", line("good.wav")),
    _lines("the same file by another path", "skipped:duplicate_path", line("./sub/../good.wav")),
    _lines("an absolute path off the volume", "skipped:outside_volume", line("/etc/hostname")),
    _lines("a path climbing off the volume", "skipped:outside_volume",
           line("../../../../../../etc/hostname")),
    _lines("a NUL byte in the path", "skipped:bad_manifest_line|missing",
           line("good2.wav\u0000.wav")),
    # Manifest files the stage refuses as a whole, naming them.
    _file("UTF-16 (byte-order mark)", REFUSED,
          _write("utf16.jsonl", (line("good2.wav").decode() + "\n").encode("utf-16"))),
    _file("Latin-1 throughout", REFUSED,
          _write("latin1.jsonl", line("good2.wav", text="caf\u00e9").decode().encode("latin-1")
                 .replace(b"\\u00e9", b"\xe9") + b"\n")),
    _file("a missing manifest", REFUSED, lambda d: d / "nowhere.jsonl"),
    _file("a folder without *.jsonl", REFUSED, _empty_dir),
    _file("a manifest linked off the volume", REFUSED, _outside_manifest),
    _file("a FIFO named .jsonl", REFUSED, _fifo_manifest),
]  # fmt: skip


@dataclass
class FileVerdict:
    kind: FileKind
    outcome: str  # skipped, handled, refused, crashed
    reason: str = ""  # the skip's reason, or the refusal's / crash's words
    detail: str = ""

    @property
    def as_expected(self) -> bool:
        want = self.kind.expect
        if want.startswith(SKIPPED + ":"):
            allowed = want.split(":", 1)[1].split("|")
            return self.outcome == SKIPPED and self.reason in allowed and bool(self.detail)
        return self.outcome == want


class _Timeout(Exception):
    pass


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    def ring(signum: int, frame: Any) -> None:
        raise _Timeout(f"no answer in {seconds:g} s")

    # An outer timer (pytest-timeout's) is put back with what it had left.
    previous = signal.signal(signal.SIGALRM, ring)
    started = time.monotonic()
    outer, interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer:
            left = max(outer - (time.monotonic() - started), 0.001)
            signal.setitimer(signal.ITIMER_REAL, left, interval)


def _filter(argv: list[str], limit: float) -> tuple[int | None, str]:
    """``marco-trainer filter`` in this process: (exit status, stderr), None on a crash."""
    from marco_trainer.cli import build_parser

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), _time_limit(limit):
            args = build_parser().parse_args(["filter", *argv])
            status = int(args.func(args) or 0)
    except _Timeout as error:
        return None, f"hang: {error}"
    except BaseException as error:  # a crash is what is measured
        return None, f"crash: {type(error).__name__}: {error}"
    return status, err.getvalue()


def judge_file(kind: FileKind, work: Path, limit: float = 20.0) -> FileVerdict:
    data, out = work / "data", work / "out"
    data.mkdir(parents=True)
    sf.write(data / "good.wav", tone(seed=1), RATE)
    sf.write(data / "good2.wav", tone(seed=2), RATE)
    good = data / "good.jsonl"
    subject = kind.make(data)
    manifests = [good]
    if isinstance(subject, tuple):
        good.write_bytes(line("good.wav") + b"\n")
        manifests.append(subject[1])
        subject_lines = 1
    else:
        rendered = [s.replace(b"{data}", str(data).encode()) for s in subject]
        good.write_bytes(b"\n".join([line("good.wav"), *rendered]) + b"\n")
        subject_lines = sum(1 for s in rendered if s.strip())
    argv = [f"--manifest={m}" for m in manifests]
    argv += ["--output-dir", str(out / "filter"), "--data-root", str(data), "--output-root",
             str(out)]  # fmt: skip
    status, stderr = _filter(argv, limit)
    if status is None:
        return FileVerdict(kind, CRASHED, stderr)
    if status == BAD_INPUT:
        last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        named = any(str(m) in last or m.name in last for m in manifests[1:])
        return FileVerdict(kind, REFUSED if named else CRASHED, last)
    if status not in (0, 1):
        return FileVerdict(kind, CRASHED, f"exit status {status}")
    kept = (out / "filter" / "kept.jsonl").read_text().splitlines()
    rejects = [json.loads(x) for x in (out / "filter" / "rejects.jsonl").read_text().splitlines()]
    if rejects:
        return FileVerdict(kind, SKIPPED, rejects[0]["reason"], rejects[0].get("detail", ""))
    if len(kept) == 1 + (subject_lines if not isinstance(subject, tuple) else 0) or (
        isinstance(subject, tuple) and len(kept) >= 1
    ):
        return FileVerdict(kind, HANDLED)
    return FileVerdict(kind, CRASHED, f"{len(kept)} kept, none rejected")


def judge_files(kinds: list[FileKind], limit: float = 20.0) -> list[FileVerdict]:
    verdicts = []
    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
        for i, kind in enumerate(kinds):
            verdicts.append(judge_file(kind, Path(tmp) / f"k{i:03d}", limit))
    return verdicts


# ---------------------------------------------------------------------------- tables


def spec_table(verdicts: list[SpecVerdict]) -> str:
    rows = [
        "| spec kind | tried | refused by pydantic | refused by the CRD | field named by both |",
        "|---|---:|---:|---:|---:|",
    ]
    total: Counter[str] = Counter()
    for group, what in SPEC_GROUPS.items():
        mine = [v for v in verdicts if v.kind.group == group]
        counts = Counter(
            tried=len(mine),
            pydantic=sum(v.pydantic is not None for v in mine),
            crd=sum(bool(v.crd) for v in mine),
            named=sum(v.ok for v in mine),
        )
        total += counts
        rows.append(f"| {what} | {counts['tried']} | {counts['pydantic']} | {counts['crd']} | "
                    f"{counts['named']} |")  # fmt: skip
    rows.append(f"| **all** | **{total['tried']}** | **{total['pydantic']}** | "
                f"**{total['crd']}** | **{total['named']}** |")  # fmt: skip
    return "\n".join(rows)


def file_table(verdicts: list[FileVerdict]) -> str:
    rows = [
        "| kind | tried | skipped with a reason | handled (kept) | refused, named | crashed "
        "or hung | as the catalogue expects |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for group, what in (("audio", "audio files"), ("manifest", "manifests and their lines")):
        mine = [v for v in verdicts if v.kind.group == group]
        c = Counter(v.outcome for v in mine)
        rows.append(f"| {what} | {len(mine)} | {c[SKIPPED]} | {c[HANDLED]} | {c[REFUSED]} | "
                    f"{c[CRASHED]} | {sum(v.as_expected for v in mine)} |")  # fmt: skip
    return "\n".join(rows)


def details(specs: list[SpecVerdict], files: list[FileVerdict]) -> str:
    rows = ["| spec kind | field | pydantic | CRD |", "|---|---|---|---|"]
    for v in specs:
        crd = v.crd[0] if v.crd else "accepted"
        rows.append(f"| {v.kind.name} | `{v.kind.field}` | {(v.pydantic or 'accepted')[:90]} | "
                    f"{crd[:90]} |".replace("\n", " "))  # fmt: skip
    rows += ["", "| file kind | expected | outcome | reason |", "|---|---|---|---|"]
    for f in files:
        rows.append(f"| {f.kind.name} | {f.kind.expect} | {f.outcome} | {f.reason[:80]} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--details", action="store_true", help="a row per kind as well")
    args = parser.parse_args(argv)
    specs = [judge_spec(kind) for kind in SPEC_KINDS]
    files = judge_files(AUDIO_KINDS + MANIFEST_KINDS)
    print(spec_table(specs))
    print()
    print(file_table(files))
    if args.details:
        print()
        print(details(specs, files))
    wrong = [v.kind.name for v in specs if not v.ok]
    wrong += [f"{f.kind.name}: {f.outcome} {f.reason}" for f in files if not f.as_expected]
    if wrong:
        print("\nnot as expected:\n  " + "\n  ".join(wrong), file=sys.stderr)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
