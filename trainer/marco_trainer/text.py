"""Text normalisation and error rates (pure; no torch).

Normalisation, documented because WER figures are meaningless without it:

- English (``en``): Whisper's English normaliser (``whisper_normalizer.english``):
  lower case, punctuation and filler words removed, spellings standardised
  (British → American), numbers and currencies written as digits.
- Every other language: Whisper's basic normaliser (``whisper_normalizer.basic``):
  lower case, punctuation and symbols replaced by spaces, whitespace collapsed.

Languages written without spaces between words (Chinese, Japanese, Thai, …) are
scored per character: their ``wer`` is computed with each character as a token
(the usual practice behind published "WER" figures for Chinese), and ``cer`` is
reported for them as well.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

#: ISO 639-1 codes of languages written without spaces between words.
CHARACTER_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "my", "km", "yue", "bo"})


def is_character_language(language: str | None) -> bool:
    return (language or "").lower().split("-")[0] in CHARACTER_LANGUAGES


@lru_cache(maxsize=8)
def normalizer(language: str | None) -> Callable[[str], str]:
    """The text normaliser applied to references and hypotheses before scoring."""
    if (language or "en").lower().split("-")[0] == "en":
        from whisper_normalizer.english import EnglishTextNormalizer

        return EnglishTextNormalizer()
    from whisper_normalizer.basic import BasicTextNormalizer

    return BasicTextNormalizer()


def normalize(text: str, language: str | None) -> str:
    return " ".join(normalizer(language)(text).split())


def _characters(text: str) -> str:
    return " ".join(ch for ch in text if not ch.isspace())


@dataclass(frozen=True)
class ErrorCounts:
    """Edit-distance counts over a corpus (sums over utterances)."""

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    reference_tokens: int = 0

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        """Error rate in percent (an empty reference with insertions counts 100 %)."""
        if self.reference_tokens == 0:
            return 0.0 if self.errors == 0 else 100.0
        return 100.0 * self.errors / self.reference_tokens

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        return ErrorCounts(
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
            self.reference_tokens + other.reference_tokens,
        )


def token_errors(reference: str, hypothesis: str) -> ErrorCounts:
    """Word-level edit counts between two already-normalised, space-separated strings."""
    import jiwer

    ref_words = reference.split()
    if not ref_words:
        return ErrorCounts(insertions=len(hypothesis.split()))
    if not hypothesis.split():
        return ErrorCounts(deletions=len(ref_words), reference_tokens=len(ref_words))
    out = jiwer.process_words(reference, hypothesis)
    return ErrorCounts(out.substitutions, out.deletions, out.insertions, len(ref_words))


@dataclass(frozen=True)
class Scored:
    reference: str
    hypothesis: str
    words: ErrorCounts
    characters: ErrorCounts


def score_pair(reference: str, hypothesis: str, language: str | None) -> Scored:
    ref, hyp = normalize(reference, language), normalize(hypothesis, language)
    chars = token_errors(_characters(ref), _characters(hyp))
    words = chars if is_character_language(language) else token_errors(ref, hyp)
    return Scored(ref, hyp, words, chars)


def corpus_rates(scored: Sequence[Scored]) -> tuple[float, float]:
    """(WER, CER) in percent over a corpus: summed edits over summed reference tokens."""
    words = sum((s.words for s in scored), ErrorCounts())
    chars = sum((s.characters for s in scored), ErrorCounts())
    return words.rate, chars.rate
