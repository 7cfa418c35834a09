"""Per-file profile records written by hand, for tests that build a profile from chosen
measurements rather than from audio."""

from __future__ import annotations

from typing import Any

from marco_trainer.audio.features import FileMetrics

#: A plain 3 s, 16 kHz PCM file at 30 dB SNR; a test overrides what it is about.
PLAIN: dict[str, Any] = {
    "sample_rate": 16000,
    "bit_depth": 16,
    "subtype": "PCM_16",
    "channels": 1,
    "duration_s": 3.0,
    "snr_db": 30.0,
    "lufs": -23.0,
    "centroid_hz": 1500.0,
    "rolloff_hz": 3000.0,
}


def file_record(index: int, **measured: Any) -> FileMetrics:
    """File `index` (path f00.wav, f01.wav, …): PLAIN with `measured` on top."""
    return FileMetrics(**{**PLAIN, "path": f"f{index:02d}.wav", **measured})
