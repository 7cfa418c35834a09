"""The ``telephony`` preset: the paper's Covo-DA, usable without a profile.

CommonVoice turned into simulated telephony by lowering sample rate and bit
depth, band-pass filtering, distortion, saturation and white noise (paper §3),
in that order, then back to the model's rate. Ranges are those of narrowband
(G.711) telephone lines: 8 kHz, 8-bit μ-law, a 300–3400 Hz pass band.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from marco_trainer.audio import ops

Audio = np.ndarray

BAND_LOW_HZ = (200.0, 400.0)
BAND_HIGH_HZ = (3000.0, 3600.0)
#: Clip level as a share of the peak (distortion); 1 would leave the signal alone.
CLIP_THRESHOLD = (0.4, 0.9)
#: tanh drive (saturation); small values are nearly linear.
SATURATION_DRIVE = (1.0, 4.0)
SNR_DB = (10.0, 30.0)


class TelephonyParams(BaseModel):
    chain: Literal["telephony"] = "telephony"
    output_rate: int
    sample_rate: int = 8000
    encoding: Literal["mulaw"] = "mulaw"
    bits: int = 8
    band_hz: tuple[float, float]
    clip_threshold: float = Field(gt=0, le=1)
    saturation_drive: float = Field(ge=0)
    snr_db: float
    noise_seed: int


def draw_telephony(rng: np.random.Generator, output_rate: int) -> TelephonyParams:
    return TelephonyParams(
        output_rate=output_rate,
        band_hz=(float(rng.uniform(*BAND_LOW_HZ)), float(rng.uniform(*BAND_HIGH_HZ))),
        clip_threshold=float(rng.uniform(*CLIP_THRESHOLD)),
        saturation_drive=float(rng.uniform(*SATURATION_DRIVE)),
        snr_db=float(rng.uniform(*SNR_DB)),
        noise_seed=int(rng.integers(2**31)),
    )


def apply_telephony(x: Audio, sr: int, p: TelephonyParams) -> tuple[Audio, int]:
    length = round(len(x) * p.output_rate / sr)
    x, sr = ops.resample(x, sr, p.sample_rate)
    x, sr = ops.quantize(x, sr, p.encoding, p.bits)
    x, sr = ops.butterworth(x, sr, "bandpass", p.band_hz)
    x, sr = ops.hard_clip(x, sr, p.clip_threshold)
    x, sr = ops.saturate(x, sr, p.saturation_drive)
    x, sr = ops.add_noise(x, sr, ops.coloured_noise(len(x), sr, 0.0, p.noise_seed), p.snr_db)
    x, sr = ops.resample(np.clip(x, -1.0, 1.0), sr, p.output_rate)
    return ops.fit_length(x, length), sr
