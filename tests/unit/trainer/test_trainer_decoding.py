"""The decoding policy's pure parts: the length bound, the loop cut, the options' checks.

Expected values are worked by hand from the documented rule
(``ceil(tokensPerSecond x duration) + extraTokens``, at most ``maxNewTokens``).
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from marco_contract.options import DecodingOptions
from marco_trainer.decoding import content_tokens, cut_repeats, finish_tokens, token_budget

GUARDED = DecodingOptions(tokens_per_second=8.0, extra_tokens=10, max_new_tokens=128, max_repeats=0)


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0.0, 10),  # nothing but the allowance
        (0.3, 13),  # 8 x 0.3 = 2.4 -> 3, + 10
        (2.0, 26),  # 16 exactly: no rounding up past a whole number
        (3.3, 37),  # 26.4 -> 27, + 10
        (9.99, 90),  # 79.92 -> 80, + 10
        (14.75, 128),  # 118 + 10 = 128: just at maxNewTokens
        (30.0, 128),  # 240 + 10, capped by maxNewTokens
    ],
)
def test_the_length_bound_follows_the_documented_rule(seconds, expected):
    assert token_budget(seconds, GUARDED) == expected


def test_the_model_ceiling_and_the_switched_off_bound():
    assert token_budget(30.0, GUARDED, ceiling=56) == 56
    assert token_budget(2.0, GUARDED, ceiling=56) == 26
    off = DecodingOptions(max_new_tokens=100, tokens_per_second=0)  # no duration bound
    assert token_budget(0.5, off) == 100
    assert token_budget(0.5, off, ceiling=40) == 40
    other = DecodingOptions(tokens_per_second=5.5, extra_tokens=0)
    assert token_budget(4.0, other) == 22 and token_budget(4.1, other) == 23  # 22.55 -> 23


def test_a_loop_of_one_token_is_cut_to_one_copy():
    assert cut_repeats([7, 1, 1, 1, 1, 1, 9], max_repeats=2) == [7, 1, 9]


def test_a_loop_of_a_phrase_is_cut_and_its_truncated_last_copy_dropped():
    # "a bit of" x 4, then "a bit" where the length limit stopped it.
    tokens = [5, 10, 11, 12, 10, 11, 12, 10, 11, 12, 10, 11, 12, 10, 11]
    assert cut_repeats(tokens, max_repeats=2) == [5, 10, 11, 12]


def test_runs_up_to_the_limit_are_speech_and_stay():
    assert cut_repeats([3, 3, 4, 5, 4, 5, 6], max_repeats=2) == [3, 3, 4, 5, 4, 5, 6]
    assert cut_repeats([3, 3, 3], max_repeats=3) == [3, 3, 3]
    assert cut_repeats([3, 3, 3, 3], max_repeats=3) == [3]
    assert cut_repeats([3, 3, 3, 3], max_repeats=0) == [3, 3, 3, 3]  # 0: no cut


def test_the_shortest_repeating_unit_is_the_loop():
    # "1 2 1 2 1 2 1 2" is four copies of "1 2", not two of "1 2 1 2".
    assert cut_repeats([1, 2, 1, 2, 1, 2, 1, 2, 8], max_repeats=2) == [1, 2, 8]
    # A unit made of a repeated token: "4 4 6" three times.
    assert cut_repeats([4, 4, 6, 4, 4, 6, 4, 4, 6], max_repeats=2) == [4, 4, 6]


def test_a_row_stops_at_its_end_then_its_budget_then_its_loops():
    eos = {0}
    assert content_tokens([5, 6, 0, 0, 7], eos) == [5, 6]
    assert finish_tokens([5, 6, 6, 6, 6, 6, 6, 0], 4, GUARDED, eos) == [5, 6, 6, 6]
    looping = DecodingOptions(max_repeats=2)
    assert finish_tokens([5, 6, 6, 6, 6, 6, 6, 0], 4, looping, eos) == [5, 6]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"temperature_fallback": [0.2, 0.0]}, "temperatures must be above 0"),
        (
            {"temperature_fallback": [0.2], "compression_ratio_threshold": 0.0},
            "needs compressionRatioThreshold or logprobThreshold",
        ),
        ({"tokens_per_second": -1.0}, "greater than or equal to 0"),
    ],
)
def test_bad_options_are_refused_naming_the_field(values, message):
    with pytest.raises(ValidationError, match=message):
        DecodingOptions(**values)
    # A fallback with only the log-probability trigger is fine.
    DecodingOptions(temperature_fallback=[0.4], compression_ratio_threshold=0, logprob_threshold=-1)
