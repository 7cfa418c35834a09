"""Data parallelism: torchrun with 2 CPU ranks (gloo) equals 1 process with 2× accumulation."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from tests.trainer_runs import read_history, read_trace, run_trainer, train_args, train_in_process

pytestmark = pytest.mark.slow


def test_two_ranks_match_one_process_with_twice_the_accumulation(
    tmp_path, tiny_whisper, speech_manifest
):
    flags = dict(learning_rate=1e-2, max_steps=12, eval_every=4, max_new_tokens=8)
    single, double = tmp_path / "single", tmp_path / "double"
    # The one process in this one (torchrun's ranks are processes of their own).
    one = train_in_process(
        *train_args(tiny_whisper, speech_manifest, single, gradient_accumulation=2, **flags)
    )
    assert one == 0
    two = run_trainer(
        *train_args(tiny_whisper, speech_manifest, double, gradient_accumulation=1, **flags),
        nproc=2,
    )
    assert two.returncode == 0, two.stderr[-3000:]

    a, b = read_history(single).evaluations, read_history(double).evaluations
    assert [e.step for e in a] == [e.step for e in b] == [4, 8, 12]
    for x, y in zip(a, b, strict=True):
        assert y.loss == pytest.approx(x.loss, rel=1e-4, abs=1e-5)
        assert y.wer == pytest.approx(x.wer, abs=1e-6)
        assert (y.lr, y.cycle) == (x.lr, x.cycle)
    assert a[-1].loss < a[0].loss  # the runs trained: the comparison is not between two no-ops

    # Both ranks took every step, with the same learning rate and global loss.
    rank0, rank1 = read_trace(double, 0), read_trace(double, 1)
    assert [t["step"] for t in rank0] == [t["step"] for t in rank1] == list(range(1, 13))
    assert [t["loss"] for t in rank0] == pytest.approx([t["loss"] for t in rank1], rel=1e-6)

    w1 = load_file(single / "checkpoints" / "last" / "model.safetensors")
    w2 = load_file(double / "checkpoints" / "last" / "model.safetensors")
    assert max(float((w1[k] - w2[k]).abs().max()) for k in w1) < 1e-4
    assert any(not torch.equal(w1[k], load_file(tiny_whisper / "model.safetensors")[k]) for k in w1)
