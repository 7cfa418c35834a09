"""The feature cache: exact round trips, compact storage of padded windows, a byte budget."""

from __future__ import annotations

import os

import soundfile as sf
import torch
from transformers import WhisperFeatureExtractor

from marco_trainer.train.feature_cache import (
    FeatureCache,
    auto_budget,
    container_memory_limit,
    pack,
    unpack,
)


def test_a_padded_window_is_stored_without_its_repeated_tail_and_comes_back_exactly():
    head = torch.randn(80, 120)
    fill = torch.full((80, 1), -0.75)
    window = torch.cat([head, fill.expand(80, 880)], dim=1)
    packed = pack(window)
    assert packed.nbytes < window.nbytes // 7
    assert torch.equal(unpack(packed), window)


def test_tensors_without_a_repeated_tail_and_tiny_ones_round_trip():
    for tensor in (torch.randn(80, 50), torch.randn(3), torch.randn(2, 4, 1), torch.tensor(1.5)):
        assert torch.equal(unpack(pack(tensor)), tensor)
    # A tail equal in one row only is not a repeated column.
    partial = torch.zeros(2, 6)
    partial[0, 3:] = 1.0
    partial[1, 5] = 2.0
    assert torch.equal(unpack(pack(partial)), partial)


def test_whisper_features_of_real_speech_come_back_bit_identical(hello_wav):
    audio, rate = sf.read(hello_wav, dtype="float32")
    extractor = WhisperFeatureExtractor(feature_size=80, chunk_length=10)
    short = audio[: rate // 2]
    features = extractor([audio, short], sampling_rate=rate, return_tensors="pt").input_features
    for row, seconds in zip(features, (len(audio) / rate, 0.5), strict=True):
        packed = pack(row)
        assert torch.equal(unpack(packed), row)
        # Only the frames that hear the clip (plus a few) are kept out of the 10 s window.
        assert packed.head.shape[-1] <= int(seconds * 100) + 5


def test_the_budget_bounds_what_is_kept_and_a_batch_hits_only_when_complete():
    one = {"input_features": torch.randn(80, 100)}
    cache = FeatureCache(max_bytes=one["input_features"].nbytes * 2 + 10)
    assert cache.put(0, one) and cache.put(1, one)
    assert not cache.put(2, one)  # over budget: left for the featuriser
    assert len(cache) == 2 and cache.bytes <= cache.max_bytes
    assert cache.get_all([0, 2]) is None
    again = cache.get_all([1, 0])
    assert again is not None and all(
        torch.equal(x["input_features"], one["input_features"]) for x in again
    )
    off = FeatureCache(max_bytes=0)
    assert not off.put(0, one) and off.get_all([0]) is None


def test_the_default_budget_shares_the_container_memory_among_the_node_ranks():
    gib = 2**30
    # 32 GiB pod, 8 GPUs: an eighth of the memory over eight ranks.
    assert auto_budget(32 * gib, 8) == gib // 2
    assert auto_budget(8 * gib, 1) == gib
    assert auto_budget(512 * gib, 1) == 2 * gib  # capped
    assert auto_budget(8 * gib, 0) == gib  # no LOCAL_WORLD_SIZE: one rank
    limit = container_memory_limit()
    assert 0 < limit <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
