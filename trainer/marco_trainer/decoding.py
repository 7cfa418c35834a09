"""The decoding policy's pure parts: the length bound and the loop cut. No torch here.

Both model families call these on the token ids that ``generate`` returned
(:meth:`marco_trainer.models.base.AsrModel.finish_hypotheses`), so that the
baseline, the trainer's validation and the evaluate stage apply one policy
(`marco_contract.options.DecodingOptions`; docs/method.md, "Decoding that
cannot run away").
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence

from marco_contract.options import DecodingOptions


def token_budget(duration: float, options: DecodingOptions, ceiling: int | None = None) -> int:
    """Most tokens a hypothesis of ``duration`` seconds of audio may hold.

    ``ceil(tokens_per_second x duration) + extra_tokens``, never above
    ``max_new_tokens`` nor the model's own ``ceiling``; just ``max_new_tokens``
    (and the ceiling) when the duration bound is off.
    """
    budget = options.max_new_tokens
    if ceiling is not None:
        budget = min(budget, ceiling)
    if options.tokens_per_second > 0:
        # Round up: the bound is an allowance, never tighter than the rate it states. The
        # hair taken off keeps a whole product whole (10 x 0.7 is 7.000000000000001).
        by_duration = math.ceil(options.tokens_per_second * max(duration, 0.0) - 1e-9)
        budget = min(budget, by_duration + options.extra_tokens)
    return max(budget, 1)


def cut_repeats(tokens: Sequence[int], max_repeats: int) -> list[int]:
    """``tokens`` with every run of more than ``max_repeats`` consecutive copies of one
    token sequence cut to a single copy; 0 leaves them as they are.

    A run that long is a decoder loop: each copy after the first is an insertion,
    and the one copy kept is what the model heard, as far as it can tell. The
    shortest repeating unit wins ("a b a b a b" is three copies of "a b", not one
    of "a b a b a b"). A loop cut off by the length limit leaves a partial copy at
    the end of the hypothesis; it is dropped with the run.
    """
    tokens = list(tokens)
    if max_repeats <= 0:
        return tokens
    out: list[int] = []
    i, length = 0, len(tokens)
    while i < length:
        for unit in range(1, (length - i) // (max_repeats + 1) + 1):
            pattern = tokens[i : i + unit]
            copies = 1
            while tokens[i + copies * unit : i + (copies + 1) * unit] == pattern:
                copies += 1
            if copies > max_repeats:
                out.extend(pattern)
                i += copies * unit
                rest = tokens[i:]
                if len(rest) < unit and rest == pattern[: len(rest)]:
                    i = length  # the loop's last copy, cut short by the length limit
                break
        else:
            out.append(tokens[i])
            i += 1
    return out


def content_tokens(row: Sequence[int], stop_ids: Collection[int]) -> list[int]:
    """The generated tokens before the first end-of-text or padding token."""
    out: list[int] = []
    for token in row:
        if token in stop_ids:
            break
        out.append(token)
    return out


def finish_tokens(
    row: Sequence[int], budget: int, options: DecodingOptions, stop_ids: Collection[int]
) -> list[int]:
    """One generated row under the policy: up to its end, at most ``budget`` tokens, loops cut.

    The budget cut comes first: a batch is generated to its longest member's budget,
    and greedy decoding of one row does not depend on the others, so cutting a row
    at its own budget gives what generating it alone would have.
    """
    return cut_repeats(content_tokens(row, stop_ids)[:budget], options.max_repeats)
