"""Which GPU a rank takes, and the refusal when ranks outnumber GPUs.

The GPU count is the edge that cannot exist here, so it is an argument of the pure
function; the process-group start itself runs for real in the gloo integration tests.
"""

from __future__ import annotations

import pytest

from marco_trainer.train.distributed import BACKEND_ENV, _gpu_index


def test_one_rank_per_gpu_takes_its_local_rank() -> None:
    assert [_gpu_index(rank, 4, "") for rank in range(4)] == [0, 1, 2, 3]


def test_more_ranks_than_gpus_is_refused_with_what_to_change() -> None:
    with pytest.raises(RuntimeError) as caught:
        _gpu_index(1, 1, "")
    message = str(caught.value)
    assert "LOCAL_RANK 1" in message
    assert "at most 1 process" in message
    assert f"{BACKEND_ENV}=gloo" in message


def test_nccl_forced_still_refuses_sharing() -> None:
    with pytest.raises(RuntimeError):
        _gpu_index(2, 2, "nccl")


def test_forced_gloo_shares_gpus_round_robin() -> None:
    assert [_gpu_index(rank, 2, "gloo") for rank in range(5)] == [0, 1, 0, 1, 0]
