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

from marco_contract.scoring import EditCounts, total

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


def token_errors(reference: str, hypothesis: str) -> EditCounts:
    """Word-level edit counts between two already-normalised, space-separated strings."""
    import jiwer

    ref_words = reference.split()
    if not ref_words:
        return EditCounts(insertions=len(hypothesis.split()))
    if not hypothesis.split():
        return EditCounts(deletions=len(ref_words), reference_words=len(ref_words))
    out = jiwer.process_words(reference, hypothesis)
    return EditCounts(
        hits=out.hits,
        substitutions=out.substitutions,
        deletions=out.deletions,
        insertions=out.insertions,
        reference_words=len(ref_words),
    )


@dataclass(frozen=True)
class Scored:
    reference: str
    hypothesis: str
    words: EditCounts
    characters: EditCounts


def score_pair(reference: str, hypothesis: str, language: str | None) -> Scored:
    ref, hyp = normalize(reference, language), normalize(hypothesis, language)
    chars = token_errors(_characters(ref), _characters(hyp))
    words = chars if is_character_language(language) else token_errors(ref, hyp)
    return Scored(ref, hyp, words, chars)


def corpus_rates(scored: Sequence[Scored]) -> tuple[float, float]:
    """(WER, CER) in percent over a corpus: summed edits over summed reference tokens."""
    return total(s.words for s in scored).rate, total(s.characters for s in scored).rate
