"""Reading audio with soundfile, refusing bad files with a reason instead of crashing.

Bit depth comes from the soundfile subtype (the container says what it stores).
Every refusal raises :class:`AudioRejected` whose ``reason`` is a short,
countable word; stages count ``skipped:<reason>``.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

#: Extensions scanned when a profile input is a directory.
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au", ".snd", ".gsm"}
)

#: Bits per sample each subtype carries. Companded and codec subtypes get their
#: nominal word size (μ/A-law: 8; GSM 06.10 works on 13-bit linear PCM; ADPCM: 4).
#: 0 marks lossy codecs where a bit depth is not defined.
SUBTYPE_BITS: dict[str, int] = {
    "PCM_S8": 8,
    "PCM_U8": 8,
    "PCM_16": 16,
    "PCM_24": 24,
    "PCM_32": 32,
    "FLOAT": 32,
    "DOUBLE": 64,
    "ULAW": 8,
    "ALAW": 8,
    "GSM610": 13,
    "IMA_ADPCM": 4,
    "MS_ADPCM": 4,
    "G721_32": 4,
    "G723_24": 3,
    "G723_40": 5,
    "DWVW_12": 12,
    "DWVW_16": 16,
    "DWVW_24": 24,
    "VORBIS": 0,
    "OPUS": 0,
    "MPEG_LAYER_III": 0,
}

#: Below this rate a header is refused. 8 kHz is narrowband telephony, the lowest
#: rate speech is recorded at (G.711, GSM and the telephony preset all run at it);
#: below it the band stops under 4 kHz and loses speech's upper formants, and in
#: practice a lower rate is a broken header (an 8 Hz file is 8 samples a second).
MIN_SAMPLE_RATE = 8000
#: Shorter than one 20 ms analysis frame is not an utterance (and resamples to nothing).
MIN_SECONDS = 0.02
#: A file whose peak stays below this is silence (-80 dBFS). The same bound, applied
#: after each channel's mean (DC offset) is removed, refuses a constant level: the
#: file holds no sound however far from zero it sits ("dc_only").
SILENCE_PEAK = 1e-4
#: Samples at or above this magnitude count as clipped.
CLIP_LEVEL = 0.999
#: A file is clipped when more than this fraction of samples sits at full scale.
#: Speech that touches full scale a few times is fine; flat-topped runs are not.
CLIP_FRACTION = 0.005
#: Downmixing by the mean loses the signal when the channels cancel (e.g. one
#: polarity-inverted): the mean keeps less than this share of the channels' mean
#: energy (two equal channels: correlation below -0.5; uncorrelated ones keep 0.5).
DOWNMIX_ENERGY_FLOOR = 0.25


class AudioRejected(Exception):
    """A file the stage cannot use; ``reason`` is counted as ``skipped:<reason>``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def bit_depth(self) -> int:
        return SUBTYPE_BITS.get(self.subtype, 0)

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def is_audio_path(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_EXTENSIONS


def find_audio_files(root: str | Path) -> list[Path]:
    """Audio files under ``root``, recursively, in a stable (sorted) order."""
    root = Path(root)
    return sorted(p for p in root.rglob("*") if p.is_file() and is_audio_path(p))


def _classify(error: Exception) -> str:
    text = str(error).lower()
    if "format not recognised" in text or "unknown format" in text or "unsupported" in text:
        return "unsupported_format"
    return "unreadable"


#: What a path is when it is not a regular file (``stat`` mode tests).
_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _check_regular_file(path: Path) -> None:
    """Refuse a path that is not a regular file before anything opens it: opening a
    FIFO blocks until a writer comes (forever, in a stage), a device never ends."""
    try:
        mode = path.stat().st_mode  # follows symlinks: a link to a file is a file
    except FileNotFoundError as error:
        raise AudioRejected("missing", f"{path}: no such file") from error
    except OSError as error:
        raise AudioRejected("unreadable", f"{path}: {error}") from error
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a file")
        raise AudioRejected("not_regular_file", f"{path}: {kind}, not a regular file")


def probe(path: str | Path) -> AudioInfo:
    """Header facts without decoding; raises :class:`AudioRejected` for unusable files."""
    path = Path(path)
    _check_regular_file(path)
    try:
        info = sf.info(str(path))
    except Exception as error:  # libsndfile reports everything as RuntimeError/LibsndfileError
        raise AudioRejected(_classify(error), f"{path}: {error}") from error
    if info.samplerate < MIN_SAMPLE_RATE:
        raise AudioRejected(
            "sample_rate_too_low", f"{path}: {info.samplerate} Hz < {MIN_SAMPLE_RATE} Hz"
        )
    return AudioInfo(info.samplerate, info.channels, info.frames, info.format, info.subtype)


def read_audio(path: str | Path) -> tuple[np.ndarray, AudioInfo]:
    """Decode ``path`` as float32 ``(frames, channels)`` with its header facts.

    Raises :class:`AudioRejected` with reason ``missing``, ``not_regular_file``,
    ``unsupported_format``, ``unreadable`` (corrupt or truncated) or ``empty``.
    """
    info = probe(path)
    try:
        data, _ = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:
        raise AudioRejected(_classify(error), f"{path}: {error}") from error
    if data.shape[0] == 0:
        raise AudioRejected("empty", f"{path}: no samples")
    if not np.isfinite(data).all():
        raise AudioRejected("unreadable", f"{path}: non-finite samples")
    frames = data.shape[0]
    return data, AudioInfo(info.sample_rate, data.shape[1], frames, info.format, info.subtype)


def check_signal(data: np.ndarray, path: str | Path = "", sample_rate: int | None = None) -> None:
    """Refuse too short, silent, constant (DC only) or clipped audio (``data`` as returned
    by :func:`read_audio`)."""
    if sample_rate and data.shape[0] < MIN_SECONDS * sample_rate:
        raise AudioRejected("too_short", f"{path}: {data.shape[0]} samples < {MIN_SECONDS} s")
    magnitude = np.abs(data)
    if float(magnitude.max()) < SILENCE_PEAK:
        raise AudioRejected("silent", f"{path}: peak below -80 dBFS")
    mean = data.mean(axis=0, dtype=np.float64)
    swing = np.maximum(data.max(axis=0) - mean, mean - data.min(axis=0))
    if float(swing.max()) < SILENCE_PEAK:
        raise AudioRejected(
            "dc_only", f"{path}: a constant level ({float(mean[0]):+.3f}), no sound around it"
        )
    clipped = float(np.count_nonzero(magnitude >= CLIP_LEVEL)) / magnitude.size
    if clipped > CLIP_FRACTION:
        raise AudioRejected("clipped", f"{path}: {clipped:.1%} of samples at full scale")


def downmix(data: np.ndarray) -> np.ndarray:
    """Mono float32 from ``(frames, channels)``: the channels' mean, or the strongest
    channel where the mean would cancel.

    The mean is right for channels that carry the same sound (it keeps the sound and
    averages uncorrelated noise down) and for different sounds (two talkers on two
    channels: both stay). It is wrong when the channels cancel, one of them wired
    with inverted polarity: the mean is near silence, and a model trained on it
    learns the transcript from nothing. Then each channel holds the sound by itself,
    and the strongest (most energy) is taken whole.
    """
    if data.shape[1] == 1:
        return np.ascontiguousarray(data[:, 0])
    mono = data.mean(axis=1, dtype=np.float32)
    energies = np.einsum("ij,ij->j", data, data, dtype=np.float64) / data.shape[0]
    mix_energy = float(np.einsum("i,i->", mono, mono, dtype=np.float64)) / data.shape[0]
    if mix_energy < DOWNMIX_ENERGY_FLOOR * float(energies.mean()):
        return np.ascontiguousarray(data[:, int(np.argmax(energies))], dtype=np.float32)
    return mono


def load_mono(path: str | Path) -> tuple[np.ndarray, AudioInfo]:
    """Read, validate and downmix: the one entry point stages use for a source file."""
    data, info = read_audio(path)
    check_signal(data, path, info.sample_rate)
    return downmix(data), info
