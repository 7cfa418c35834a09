"""Noise at the SNR the profile *reads*, not at the SNR it names.

The profile's SNR is a blind estimate (``features.estimate_snr``: the louder
half of the frames against a low percentile). F_noise draws an SNR from the
target's estimates and ``ops.add_noise`` mixes at that SNR by its own
definition (active speech power against the noise's mean power). The two do
not agree: the estimator reads a noisy frame as partly speech, and a mix at
0 dB reads 3-5 dB (measured on the car scenario: 2.8 dB cleaner than mixed,
median, and 0.55 dB read for each dB mixed). So the augmented set read
cleaner than the target it was drawn from, by about the estimator's bias.

The calibration measures that mapping on the chain itself: a few source
utterances go through their drawn chain at their drawn SNR and at
``CALIBRATION_STEP_DB`` lower, the estimator reads each output, and a
least-squares line reading = slope · mixed + intercept is fitted. F_noise then
takes its draw as the reading to reproduce and mixes at the SNR the line says
gives it (``SnrCalibration.mixed_for``).

The same utterances also tell the compression step what noise alone does to the
level spread. Noise fills the pauses, so a noisy target is narrow without any
compressor (the car scenario: median 9.5 dB, under the 15 dB gate that marks a
compressed target) and F_lufs squeezed half the copies at ratios up to 8. Each
utterance is run once more at its calibrated SNR without compression, and the
median level spread of those outputs (``uncompressed_spread_db``) is how narrow
this chain makes speech by itself: a target only counts as compressed when it is
narrower than that. Pure: the callers load audio and log.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from pydantic import BaseModel, Field

from marco_trainer.audio.features import estimate_snr, level_spread

#: Utterances the calibration mixes (twice each): a second or two of work.
CALIBRATION_UTTERANCES = 24
#: The second mix of each utterance, this much noisier: the line's slope.
CALIBRATION_STEP_DB = 8.0
#: Below this slope the estimator hardly sees the noise: inverting the line multiplies
#: any difference in how it reads the target and the copies by more than two, so the
#: line is not applied. Measured on the car scenario (harvested engine and road noise):
#: slope 0.40, and mixing by the line put the copies' true SNR (speech against noise
#: power, known for the generator's channel) at p10/50/90 -12.8/-1.7/8.6 dB against
#: the target's 0.6/4.8/11.0, while the uncalibrated draws (the readings) land near it.
MIN_SLOPE = 0.5
#: Mixed SNRs stay in this range whatever the line says (dB).
MIXED_RANGE_DB = (-10.0, 60.0)


class SnrCalibration(BaseModel):
    """How the estimator reads this chain's output: reading ≈ slope · mixed + intercept."""

    slope: float
    intercept: float
    utterances: int = Field(ge=1, description="Source utterances mixed, twice each.")
    applied: bool = Field(
        default=True,
        description="False when the line is flatter than MIN_SLOPE: the noise is mixed at "
        "the drawn reading itself.",
    )
    uncompressed_spread_db: float | None = Field(
        default=None,
        description="Median level spread (dB) of the same utterances mixed at their "
        "calibrated SNR without compression: how narrow the noise alone makes them.",
    )

    def mixed_for(self, reading_db: float) -> float:
        """The SNR to mix at so that the estimator reads ``reading_db``."""
        if not self.applied:
            return reading_db
        low, high = MIXED_RANGE_DB
        return float(np.clip((reading_db - self.intercept) / self.slope, low, high))


def fit_line(mixed: Sequence[float], read: Sequence[float]) -> tuple[float, float]:
    """Least-squares slope and intercept of ``read`` against ``mixed``."""
    slope, intercept = np.polyfit(np.asarray(mixed, float), np.asarray(read, float), 1)
    return float(slope), float(intercept)


Mix = Callable[[int, np.ndarray, int, float], tuple[np.ndarray, int, float]]


def calibrate(
    samples: Sequence[tuple[np.ndarray, int]],
    mix: Mix,
    step_db: float = CALIBRATION_STEP_DB,
    uncompressed: Mix | None = None,
) -> SnrCalibration | None:
    """The estimator's line over ``samples`` (audio, rate), not applied when too flat;
    None when the mixes do not vary.

    ``mix(i, audio, rate, offset_db)`` runs sample ``i``'s drawn chain with its SNR moved
    by ``offset_db`` and returns the output, its rate and the SNR it mixed at.
    ``uncompressed`` does the same without the compression step; with it, the line's
    ``uncompressed_spread_db`` is measured at each sample's calibrated SNR."""
    mixed: list[float] = []
    read: list[float] = []
    for index, (audio, rate) in enumerate(samples):
        for offset in (0.0, -step_db):
            out, out_rate, snr = mix(index, audio, rate, offset)
            mixed.append(snr)
            read.append(estimate_snr(out, out_rate))
    if len(set(mixed)) < 2:
        return None
    slope, intercept = fit_line(mixed, read)
    line = SnrCalibration(
        slope=slope, intercept=intercept, utterances=len(samples), applied=slope >= MIN_SLOPE
    )
    if uncompressed is None:
        return line
    spreads = []
    for index, (audio, rate) in enumerate(samples):
        # The sample's draw is a reading; the copy mixes at what reads as it.
        drawn = mixed[2 * index]
        out, out_rate, _ = uncompressed(index, audio, rate, line.mixed_for(drawn) - drawn)
        spreads.append(level_spread(out, out_rate))
    return line.model_copy(update={"uncompressed_spread_db": float(np.median(spreads))})
