"""The decoding policy on real (tiny) models made to run away.

The model's output layer is replaced by one whose bias favours a single word,
whatever the audio: greedy decoding then emits that word until something stops
it, exactly the runaway hypothesis the policy exists for. The expected lengths
are worked by hand from the documented bound, ``ceil(tokensPerSecond x
duration) + extraTokens``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import marco_trainer.decoding as pure
import marco_trainer.models.base as models_base
from marco_contract.options import DecodingOptions
from marco_trainer.models import load_asr_model
from marco_trainer.models.base import AsrModel

RATE = 16000


def runaway(model_dir, word: str = " hello") -> AsrModel:
    asr = load_asr_model(str(model_dir), family="auto", language="en", task="transcribe")
    (token,) = asr.processor.tokenizer(word, add_special_tokens=False).input_ids
    vocab = asr.model.get_output_embeddings().out_features
    width = asr.model.get_output_embeddings().in_features
    head = torch.nn.Linear(width, vocab, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[token] = 10.0  # every step: this word, never end-of-text
    asr.model.set_output_embeddings(head)
    return asr


def clips(*seconds: float) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.normal(0, 0.05, round(s * RATE)).astype(np.float32) for s in seconds]


@pytest.fixture(scope="module", params=["tiny_whisper", "tiny_qwen2_audio"])
def looping(request) -> AsrModel:
    return runaway(request.getfixturevalue(request.param))


def test_without_a_bound_the_model_runs_to_max_new_tokens(looping):
    unguarded = DecodingOptions(
        max_new_tokens=30, tokens_per_second=0, max_repeats=0, temperature_fallback=[]
    )
    texts = looping.transcribe(clips(0.5, 2.0), unguarded)
    assert [text.split() for text in texts] == [["hello"] * 30] * 2


def test_each_hypothesis_stops_at_its_own_duration_bound_in_one_batch(looping):
    policy = DecodingOptions(
        tokens_per_second=8.0, extra_tokens=2, max_new_tokens=40, max_repeats=0,
        temperature_fallback=[],
    )  # fmt: skip
    # 0.5 s: 8 x 0.5 = 4, + 2 = 6; 1.0 s: 8 + 2 = 10; 2.25 s: 18 + 2 = 20.
    texts = looping.transcribe(clips(0.5, 1.0, 2.25), policy)
    assert [len(text.split()) for text in texts] == [6, 10, 20]
    assert {word for text in texts for word in text.split()} == {"hello"}


def test_the_repetition_guard_cuts_the_loop_to_one_copy(looping):
    policy = DecodingOptions(
        tokens_per_second=8.0, extra_tokens=2, max_repeats=2, temperature_fallback=[]
    )
    assert looping.transcribe(clips(1.0, 2.0), policy) == [" hello", " hello"]


def test_the_temperature_fallback_stays_bounded_seeded_and_leaves_the_callers_rng(
    tiny_whisper, monkeypatch
):
    asr = runaway(tiny_whisper)
    # Soften the favoured word so that sampling at a high temperature wanders off it.
    with torch.no_grad():
        asr.model.get_output_embeddings().bias.mul_(0.5)
    kept: list[
        int
    ] = []  # each hypothesis's token count, as generated (text re-encodes differently)

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        tokens = pure.finish_tokens(*args, **kwargs)
        kept.append(len(tokens))
        return tokens

    monkeypatch.setattr(models_base, "finish_tokens", counted)
    policy = DecodingOptions(
        tokens_per_second=8.0, extra_tokens=2, max_repeats=0, temperature_fallback=[0.5, 1.0, 2.0]
    )
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = asr.transcribe(clips(0.5, 1.0, 2.25), policy)
    assert torch.equal(torch.get_rng_state(), state)  # training's dropout and order untouched
    assert kept[0] <= 6 and kept[1] <= 10 and kept[2] <= 20
    again = asr.transcribe(clips(0.5, 1.0, 2.25), policy)
    assert first == again  # the same checkpoint gives the same WER
    # The fallback did run: greedy alone gives the favoured word only.
    assert {word for text in first for word in text.split()} != {"hello"}
