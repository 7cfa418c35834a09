"""spec.training.seed: the same seed gives the same run, another seed another run.

Without it two runs could not be compared at all: a WER difference between them
might be the data order's. The tiny Whisper has no dropout and no new
parameters, so here the seed acts through the order of the micro-batches.

The runs are in this process, one after the other (the trainer as a process is tested
elsewhere): each starting where the last left the global RNGs, so the seed must set them
all.
"""

from __future__ import annotations

import pytest

from tests.trainer_runs import read_trace, train_args, train_in_process

pytestmark = pytest.mark.slow

FLAGS = dict(learning_rate=1e-2, max_steps=4, eval_every=4, max_new_tokens=4)


def losses(model, manifest, out, seed: int) -> list[float]:
    assert train_in_process(*train_args(model, manifest, out, seed=seed, **FLAGS)) == 0
    return [line["loss"] for line in read_trace(out)]


def test_same_seed_same_losses_other_seed_other_losses(tmp_path, tiny_whisper, speech_manifest):
    first = losses(tiny_whisper, speech_manifest, tmp_path / "a", seed=3)
    again = losses(tiny_whisper, speech_manifest, tmp_path / "b", seed=3)
    other = losses(tiny_whisper, speech_manifest, tmp_path / "c", seed=4)
    assert len(first) == 4 and all(loss is not None for loss in first)
    assert first == again
    assert first != other
