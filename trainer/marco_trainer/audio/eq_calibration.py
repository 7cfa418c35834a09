"""One equaliser for the whole augmented set, measured on the chain's own copies.

A channel is one frequency response: every talker through it is coloured the same
way. The equaliser used to be resolved per utterance, as the target's mean long-term
spectrum minus the utterance's own, so every copy was forced onto the target's mean
shape whatever its voice: on the meeting scenario (no channel colouring at all, a room
and babble) gains of +11 dB at 100 Hz and -10 dB at 200 Hz on single copies, the
copies' band levels 1-5 dB apart from file to file against the target's 2-7 dB and
the true channel's 2-12 dB (docs/method.md, deviation 20, fourth correction). A
voice's own spectrum is not the channel's.

Here the chain runs on a spread of source utterances with the equaliser flat, the
copies' long-term spectrum is compared with the target's (both as the profile measures
them, dB re the speech band; per band the median file, as a few voices far louder in
a band carry a mean of powers: on meeting, matched on mean power, the copies' median
file sat 3 dB under the target's at 500-1000 Hz), and the difference,
smoothed over neighbouring bands and clipped to ``EQ_MAX_DB``, is the gain every copy
gets; under ``EQ_LOW_HZ`` (the talkers' pitch) none. ``PASSES`` more runs through the
gains so far correct what the filter could not realise and what the steps after it
changed. What
differs between the copies' voices stays.
Pure: the callers run the chain and load audio.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from pydantic import BaseModel, Field

from marco_trainer.audio import channel as channels
from marco_trainer.audio.spectra import median_levels_db

#: Utterances the calibration runs through the chain per pass: enough voices and rooms
#: for a mean spectrum (the profile's target mean is over ~150 files).
CALIBRATION_UTTERANCES = 48
#: Corrections after the flat pass, each measured through the gains so far (a last run
#: measures the final gains: ``equalised_db``).
PASSES = 2
#: The equaliser's gains stay within ±EQ_MAX_DB (a channel colours, it does not carve).
EQ_MAX_DB = 12.0
#: Bands under this are left flat. There the long-term spectrum is the talkers' pitch,
#: not the channel: on meeting the true channel's copies sit 5 dB over the target at
#: 200-250 Hz and 3-4 dB under it at 100-125 Hz (median over files) because the source
#: and target voices differ, and matching them there cut 12 dB where the channel is flat.
#: A channel's own low edge is the band-pass's (``ChannelStep.band_low_hz``).
EQ_LOW_HZ = 300.0

#: The chain on sample ``index`` with these equaliser gains: (audio, rate).
RunChain = Callable[[int, np.ndarray, int, list[float]], tuple[np.ndarray, int]]


class EqCalibration(BaseModel):
    """The set's equaliser and how the copies' spectrum read before and after it."""

    gains_db: list[float] = Field(description="Gain per band of THIRD_OCTAVES_HZ, every copy.")
    target_db: list[float | None] = Field(description="The target's band levels, median file.")
    flat_db: list[float | None] = Field(description="The copies' (median), no equaliser.")
    equalised_db: list[float | None] = Field(description="The same with the gains.")
    utterances: int

    def residual_db(self) -> float | None:
        """Root-mean-square distance of the equalised copies from the target, dB."""
        return _rms_distance(self.equalised_db, self.target_db)

    def flat_residual_db(self) -> float | None:
        return _rms_distance(self.flat_db, self.target_db)


def _rms_distance(levels: Sequence[float | None], target: Sequence[float | None]) -> float | None:
    pairs = [a - b for a, b in zip(levels, target, strict=True) if a is not None and b is not None]
    return float(np.sqrt(np.mean(np.square(pairs)))) if pairs else None


def correction_db(target: Sequence[float | None], copies: Sequence[float | None]) -> list[float]:
    """Per band, target − copies, smoothed over the neighbouring bands that have one
    (weights ¼, ½, ¼, renormalised where a neighbour is missing, so a band next to an
    unmeasured one is not pulled toward 0); 0 where either has no level."""
    raw = [
        t - c if t is not None and c is not None else None
        for t, c in zip(target, copies, strict=True)
    ]
    out = []
    for i, value in enumerate(raw):
        if value is None:
            out.append(0.0)
            continue
        known = [
            (w, v)
            for w, j in ((0.25, i - 1), (0.5, i), (0.25, i + 1))
            if 0 <= j < len(raw) and (v := raw[j]) is not None
        ]
        out.append(sum(w * v for w, v in known) / sum(w for w, _ in known))
    return out


def band_levels_of(audio: np.ndarray, sample_rate: int) -> list[float | None]:
    """One file's long-term band levels, as the profile measures the target's."""
    db, freqs = channels.long_term_spectrum(audio, sample_rate)
    return channels.band_levels(db, freqs)


def calibrate_eq(
    samples: Sequence[tuple[np.ndarray, int]],
    run: RunChain,
    target_db: Sequence[float | None],
    passes: int = PASSES,
) -> EqCalibration | None:
    """The gains that bring the copies' long-term spectrum (median file per band) onto
    ``target_db``, the target's read the same way; None without samples or bands to
    compare."""
    if not samples or all(t is None for t in target_db):
        return None
    bands = len(channels.THIRD_OCTAVES_HZ)
    if len(target_db) != bands:
        raise ValueError(f"target band levels: {len(target_db)} values for {bands} bands")
    # The pitch region is the talkers' (EQ_LOW_HZ): no target there, so no gain.
    target_db = [
        t if c >= EQ_LOW_HZ else None
        for c, t in zip(channels.THIRD_OCTAVES_HZ, target_db, strict=True)
    ]
    gains = [0.0] * bands
    flat: list[float | None] | None = None
    measured: list[float | None] = []
    for step in range(passes + 1):
        outputs = [run(i, audio, rate, gains) for i, (audio, rate) in enumerate(samples)]
        measured = median_levels_db([band_levels_of(a, r) for a, r in outputs])
        if step == 0:
            flat = measured
        if step == passes:
            break
        change = correction_db(target_db, measured)
        gains = [
            round(float(np.clip(g + c, -EQ_MAX_DB, EQ_MAX_DB)), 2)
            for g, c in zip(gains, change, strict=True)
        ]
    assert flat is not None
    return EqCalibration(
        gains_db=gains,
        target_db=list(target_db),
        flat_db=flat,
        equalised_db=measured,
        utterances=len(samples),
    )
