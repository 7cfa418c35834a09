"""Data filtering before training (the paper's "rigorous data filtering"): pure rules.

A line is rejected for the first rule it breaks, in this order: duplicate path,
unreadable audio (``io`` reasons), a header duration over the bound (refused before
decoding), unusable samples (``io`` reasons), duplicate audio content, decoded
duration out of bounds, empty transcript, transcript over the model's token limit,
implausible characters per second.

Tokens are approximated without a tokenizer: Whisper's byte-level BPE spends
about one token per 3–4 Latin characters and about one per CJK character; we
count ``ceil(ascii_chars / 3) + non_ascii_chars + 4`` (the 4 special prompt
tokens), which overestimates for English, so an accepted transcript fits
Whisper's 448-token decoder limit.
"""

from __future__ import annotations

import math

from pydantic import Field

from marco_contract.options import FilterOptions

WHISPER_MAX_TOKENS = 448
PROMPT_TOKENS = 4


class FilterRules(FilterOptions):
    """The spec's filter bounds (defaults there, once) and the filter's own limits."""

    max_text_tokens: int = Field(
        default=WHISPER_MAX_TOKENS, gt=0, description="Approximate transcript tokens at most."
    )
    min_chars_per_second: float = Field(
        default=1.0,
        ge=0,
        description="Transcript characters per second of audio below which a line is rejected.",
    )


def approx_tokens(text: str) -> int:
    ascii_chars = sum(1 for c in text if ord(c) < 128)
    return math.ceil(ascii_chars / 3) + (len(text) - ascii_chars) + PROMPT_TOKENS


def spoken_chars(text: str) -> int:
    """Characters that take time to say (whitespace and punctuation do not)."""
    return sum(1 for c in text if c.isalnum())


def judge(text: str | None, duration: float, rules: FilterRules) -> tuple[str, str] | None:
    """The (reason, detail) that rejects a readable line, or None to keep it."""
    if duration < rules.min_duration:
        return "too_short", f"{duration:.2f} s < {rules.min_duration} s"
    if duration > rules.max_duration:
        return "too_long", f"{duration:.2f} s > {rules.max_duration} s"
    if text is None or not text.strip():
        return "empty_text", "no transcript"
    tokens = approx_tokens(text)
    if tokens > rules.max_text_tokens:
        return "text_too_long", f"~{tokens} tokens > {rules.max_text_tokens}"
    rate = spoken_chars(text) / duration
    if rate < rules.min_chars_per_second:
        return "chars_per_second_low", f"{rate:.1f} chars/s < {rules.min_chars_per_second}"
    if rate > rules.max_chars_per_second:
        return "chars_per_second_high", f"{rate:.1f} chars/s > {rules.max_chars_per_second}"
    return None
