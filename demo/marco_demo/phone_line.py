"""A telephone line, simulated: background noise, 300-3400 Hz band, 8 kHz, a speech codec.

This is how the demo's target domain sounds (call-centre recordings). The noise
is added in numpy from a seeded generator, so a channel is replayable from its
parameters; sox does the band-pass, the resampling and the codec (GSM 06.10 full
rate or G.711 μ-law), and the result is stored decoded, as 8 kHz 16-bit PCM.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
from pydantic import BaseModel, Field

TELEPHONE_RATE = 8000
#: Headroom kept before the codec so that adding noise never clips.
PEAK_LIMIT = 0.89
Codec = Literal["gsm", "mulaw"]


class ChannelParams(BaseModel):
    """Everything needed to replay one utterance's channel (logged in the manifest)."""

    codec: Codec = "gsm"
    snr_db: float = Field(default=15.0, description="Speech-to-noise ratio of the added noise.")
    low_hz: float = Field(default=300.0, gt=0)
    high_hz: float = Field(default=3400.0, gt=0, lt=TELEPHONE_RATE / 2)
    seed: int = Field(default=0, ge=0, description="Seed of the noise generator.")


def pink_noise(length: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-power 1/f noise: closer to room and line hiss than white noise."""
    spectrum = np.fft.rfft(rng.standard_normal(length))
    frequencies = np.arange(spectrum.size, dtype=np.float64)
    frequencies[0] = 1.0  # no division by zero; the DC bin is zeroed below anyway
    spectrum /= np.sqrt(frequencies)
    spectrum[0] = 0.0
    noise = np.fft.irfft(spectrum, n=length)
    return noise / (np.sqrt(np.mean(noise**2)) + 1e-12)


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Mix pink noise at ``snr_db`` below the signal's power, then keep codec headroom."""
    audio = np.asarray(audio, dtype=np.float64)
    power = float(np.mean(audio**2))
    if power == 0.0:
        raise ValueError("cannot set an SNR on silent audio")
    noisy = audio + pink_noise(audio.size, rng) * np.sqrt(power / 10 ** (snr_db / 10))
    peak = float(np.max(np.abs(noisy)))
    if peak > PEAK_LIMIT:
        noisy *= PEAK_LIMIT / peak
    return noisy.astype(np.float32)


def run_sox(*arguments: str) -> None:
    try:
        # -R: repeatable dither, so a channel replays bit for bit from its parameters.
        subprocess.run(["sox", "-R", *arguments], check=True, capture_output=True, text=True)
    except FileNotFoundError as error:
        raise RuntimeError("sox is not installed (run `make install`)") from error
    except subprocess.CalledProcessError as error:
        raise RuntimeError(f"sox {' '.join(arguments)} failed: {error.stderr.strip()}") from error


def telephony_channel(source: str | Path, target: str | Path, params: ChannelParams) -> Path:
    """Pass ``source`` (any rate, mono) through the phone line into ``target`` (8 kHz PCM)."""
    source, target = Path(source), Path(target)
    audio, rate = sf.read(source, dtype="float32", always_2d=True)
    noisy = add_noise(audio.mean(axis=1), params.snr_db, np.random.default_rng(params.seed))
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        clean = Path(tmp) / "in.wav"
        sf.write(clean, noisy, rate, subtype="FLOAT")
        band = ("sinc", f"{params.low_hz:g}-{params.high_hz:g}")
        if params.codec == "gsm":
            coded = Path(tmp) / "line.gsm"
            run_sox(
                str(clean), "-r", str(TELEPHONE_RATE), "-c", "1", "-t", "gsm", str(coded), *band
            )
        else:
            coded = Path(tmp) / "line.wav"
            run_sox(str(clean), "-r", str(TELEPHONE_RATE), "-c", "1", "-e", "u-law", "-b", "8",
                 str(coded), *band)  # fmt: skip
        # Decode into a temp name next to the target, then rename: never a half-written file.
        partial = target.with_name(f".{target.name}.partial.wav")
        run_sox(str(coded), "-b", "16", "-e", "signed-integer", str(partial))
        partial.replace(target)
    return target
