"""An MP3 at the bitrate the target's had, found by matching its spectral holes.

The profile tells a low-bitrate perceptual codec in decoded PCM by its spectral
holes (``channel.spectral_holes``), but not the bitrate it ran at, and the bitrate
is what the holes (and the muffled, warbling sound) come from: libsndfile's
default MP3 at 16 kHz runs near 53 kbit/s and leaves 0.004 of the cells empty,
the VoIP scenario's 12-16 kbit/s target 0.09. So the augment stage encodes a few
source utterances at each of ``LEVELS`` (libsndfile's compression level, constant
bitrate) and takes the level whose median hole share is nearest the target's,
on a log scale (the shares span two decades). Measured on the VoIP scenario's
source: 0.0006/0.004/0.05/0.10 at levels 0.5/0.8/0.9/0.95, against the target's
0.09. Pure: the caller loads the audio and logs the result.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from pydantic import BaseModel, Field

from marco_trainer.audio import ops
from marco_trainer.audio.channel import spectral_holes

#: Compression levels tried, from high to low bitrate (at 16 kHz: 83, 58, 42, 33, 25 and
#: 16 kbit/s). Not 0.97 (8 kbit/s): it low-passes near 3 kHz, inside the band the holes
#: are counted in, and its share falls again (0.05 against 16 kbit/s's 0.07 on the test
#: utterance), so a 16 kbit/s target matched it. libsndfile refuses 1.0.
LEVELS: tuple[float, ...] = (0.5, 0.7, 0.8, 0.85, 0.9, 0.95)
#: Source utterances encoded at every level: a few seconds of work.
CALIBRATION_UTTERANCES = 12
#: Hole shares under this count as this (log of zero).
SHARE_FLOOR = 1e-4

Encode = Callable[[np.ndarray, int, str, float | None], tuple[np.ndarray, int]]


class CodecCalibration(BaseModel):
    """The MP3 level whose copies' spectral holes come nearest the target's."""

    level: float = Field(ge=0, lt=1, description="libsndfile compression level chosen.")
    target_holes: float = Field(ge=0, description="The target's median hole share.")
    holes: dict[str, float] = Field(
        description="Median hole share of the calibration utterances per level tried."
    )
    utterances: int = Field(ge=1)


def _log_share(share: float) -> float:
    return math.log(max(share, SHARE_FLOOR))


def calibrate_mp3(
    samples: Sequence[tuple[np.ndarray, int]],
    target_holes: float,
    encode: Encode = ops.codec_round_trip,
    levels: Sequence[float] = LEVELS,
) -> CodecCalibration | None:
    """The level of ``levels`` at which ``samples`` (audio, rate) encoded as MP3 have the
    median hole share nearest ``target_holes``; None when no sample can be measured."""
    measured: dict[float, float] = {}
    for level in levels:
        shares = []
        for audio, rate in samples:
            coded, coded_rate = encode(audio, rate, "mp3", level)
            share = spectral_holes(coded, coded_rate)
            if share is not None:
                shares.append(share)
        if shares:
            measured[level] = float(np.median(shares))
    if not measured:
        return None
    goal = _log_share(target_holes)
    best = min(measured, key=lambda level: abs(_log_share(measured[level]) - goal))
    return CodecCalibration(
        level=best,
        target_holes=target_holes,
        holes={f"{level:g}": share for level, share in measured.items()},
        utterances=len(samples),
    )
