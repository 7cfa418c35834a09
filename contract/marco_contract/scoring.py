"""Edit counts of hypotheses against references, and the error rate they give.

One model for the counts every WER in the project comes from (jiwer's alignment
per utterance, summed over a corpus), so that the counts of several shards sum
to the counts of the whole set and the rate of the sum is the unsharded rate.
Pure pydantic, no jiwer: the trainer counts, the operator only adds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from pydantic import BaseModel, ConfigDict, Field, model_validator


class EditCounts(BaseModel):
    """Hits, substitutions, deletions and insertions of an alignment, summed over utterances.

    Tokens are words, or characters where the language is scored per character (CER, and
    the WER of languages written without spaces)."""

    model_config = ConfigDict(frozen=True)

    hits: int = Field(default=0, ge=0)
    substitutions: int = Field(default=0, ge=0)
    deletions: int = Field(default=0, ge=0)
    insertions: int = Field(default=0, ge=0)
    reference_words: int = Field(
        default=0, ge=0, description="Reference tokens: hits + substitutions + deletions."
    )

    @model_validator(mode="after")
    def _aligned(self) -> EditCounts:
        # Every reference token is hit, substituted or deleted: a sum that disagrees is
        # counts of two different alignments (or a hand-edited file).
        aligned = self.hits + self.substitutions + self.deletions
        if aligned != self.reference_words:
            raise ValueError(
                f"reference_words is {self.reference_words}, but hits + substitutions + "
                f"deletions is {aligned}"
            )
        return self

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        """Error rate in percent: (S + D + I) / reference tokens; an empty reference with
        insertions counts 100 %."""
        if self.reference_words == 0:
            return 0.0 if self.errors == 0 else 100.0
        return 100.0 * self.errors / self.reference_words

    def __add__(self, other: EditCounts) -> EditCounts:
        return EditCounts(
            hits=self.hits + other.hits,
            substitutions=self.substitutions + other.substitutions,
            deletions=self.deletions + other.deletions,
            insertions=self.insertions + other.insertions,
            reference_words=self.reference_words + other.reference_words,
        )


def total(counts: Iterable[EditCounts]) -> EditCounts:
    """The counts of a corpus from its parts' (utterances', or shards')."""
    return sum(counts, EditCounts())


def percent(counts: EditCounts) -> float:
    """The rate a stage result states: `rate` to 4 decimals, the one rounding of every WER a
    result carries, whether a stage computed it from its utterances or a merge from shards."""
    return round(counts.rate, 4)


def wer_standard_error(errors: Sequence[int], words: Sequence[int]) -> float | None:
    """Standard error, in percent points, of a corpus WER from how its utterances spread.

    The corpus WER is a ratio of sums, R = Σe / Σw; its sampling variance over
    utterances is the ratio estimator's, n / (n − 1) · Σ (e_i − R·w_i)² / (Σw)²
    (with equal word counts: the standard error of the mean of the utterances' own
    rates). It says how much the WER of this model would move on another draw of as
    many utterances: on 40 utterances of a 30 % WER it is about 4 points. None for
    fewer than two utterances or no reference words."""
    n, total_words = len(errors), sum(words)
    if n != len(words):
        raise ValueError(f"{n} error counts for {len(words)} word counts")
    if n < 2 or total_words == 0:
        return None
    rate = sum(errors) / total_words
    spread = sum((e - rate * w) ** 2 for e, w in zip(errors, words, strict=True))
    return 100 * math.sqrt(n / (n - 1) * spread) / total_words


def wer_change_standard_error(
    before: Sequence[int], after: Sequence[int], words: Sequence[int]
) -> float | None:
    """Standard error, in percent points, of the change of a corpus WER between two
    decodings of the same utterances (two checkpoints on one validation subset).

    The change is Σ(a_i − b_i) / Σw, a ratio of sums as the WER is, so its sampling
    variance is the ratio estimator's over the per-utterance differences. Paired, it is
    far smaller than either WER's own standard error: an utterance that is hard for one
    checkpoint is hard for the next, and that shared part cancels. It is the noise in
    how two evaluations of one subset differ, what Eq. 1's spread is read against
    (schedule.noise_excess_sigma). None as for wer_standard_error."""
    if len(before) != len(after):
        raise ValueError(f"{len(before)} error counts before, {len(after)} after")
    return wer_standard_error([a - b for a, b in zip(after, before, strict=True)], words)
