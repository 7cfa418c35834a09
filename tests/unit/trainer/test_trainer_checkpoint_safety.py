"""Loading a checkpoint runs no code: a pickle in checkpoints/last that names a callable
(what whoever can write the output volume could leave there) is refused, and the files
the trainer writes itself still load."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from marco_trainer.train.checkpoint import (
    OPTIMIZER_FILE,
    RNG_FILE,
    STATE_FILE,
    TrainerState,
    UnsafeCheckpoint,
    load_last,
    load_tensors,
    rekey_optimizer_state,
    rng_state,
    set_rng_state,
)


class _Payload:
    """Pickles as a call of exec: unpickling it would create `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


class _FakeAsr:
    device = torch.device("cpu")
    sharded = False
    model = torch.nn.Linear(2, 2)  # the parameters' names: weight, bias

    def load_weights(self, path: Path) -> None:
        pass


def _last_checkpoint(folder: Path, optimizer: torch.optim.Optimizer) -> Path:
    folder.mkdir()
    torch.save(optimizer.state_dict(), folder / OPTIMIZER_FILE)
    torch.save(rng_state(), folder / RNG_FILE)
    (folder / STATE_FILE).write_text(TrainerState(learning_rate=1e-3, step=7).model_dump_json())
    return folder


def _optimizer() -> torch.optim.Optimizer:
    layer = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=1e-3, betas=(0.9, 0.995))
    layer(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    return optimizer


@pytest.mark.parametrize("name", [OPTIMIZER_FILE, RNG_FILE])
def test_a_crafted_pickle_in_the_checkpoint_is_refused_and_runs_nothing(tmp_path, name):
    marker = tmp_path / "ran"
    last = _last_checkpoint(tmp_path / "last", _optimizer())
    torch.save({"state": _Payload(marker)}, last / name)
    with pytest.raises(UnsafeCheckpoint, match=name):
        load_last(last, _FakeAsr(), _optimizer())  # type: ignore[arg-type]
    assert not marker.exists()


def test_the_files_the_trainer_writes_load_back(tmp_path):
    optimizer = _optimizer()
    last = _last_checkpoint(tmp_path / "last", optimizer)
    expected = (random.random(), np.random.random(), torch.rand(1))
    fresh = _optimizer()
    state = load_last(last, _FakeAsr(), fresh)  # type: ignore[arg-type]
    assert state.step == 7
    assert fresh.state_dict()["param_groups"] == optimizer.state_dict()["param_groups"]
    assert (random.random(), np.random.random(), torch.rand(1)) == expected


def test_rng_states_round_trip_through_a_weights_only_load(tmp_path):
    torch.save(rng_state(), tmp_path / RNG_FILE)
    first = (random.random(), np.random.normal(), np.random.random(), torch.rand(2).tolist())
    set_rng_state(load_tensors(tmp_path / RNG_FILE))
    again = (random.random(), np.random.normal(), np.random.random(), torch.rand(2).tolist())
    assert again == first


def _draws() -> tuple:
    return (random.random(), np.random.random(), torch.rand(2).tolist())


def test_each_rank_resumes_from_its_own_rng_states(tmp_path):
    """rng.pt holds every rank's states: rank 1 goes on from rank 1's, not rank 0's."""
    optimizer = _optimizer()
    last = _last_checkpoint(tmp_path / "last", optimizer)
    per_rank, expected = [], []
    for rank_seed in (10, 11):  # two ranks' generators, in different places
        random.seed(rank_seed)
        np.random.seed(rank_seed)
        torch.manual_seed(rank_seed)
        per_rank.append(rng_state())
        expected.append(_draws())
    torch.save({"ranks": per_rank}, last / RNG_FILE)
    for rank in (1, 0):
        fresh = _optimizer()
        random.seed(99), np.random.seed(99), torch.manual_seed(99)
        load_last(last, _FakeAsr(), fresh, rank)  # type: ignore[arg-type]
        assert _draws() == expected[rank]


@pytest.mark.parametrize(
    ("ranks_saved", "old_format"), [(2, False), (1, True)], ids=["more-ranks", "rank-0-only"]
)
def test_a_rank_without_saved_states_keeps_its_own(tmp_path, caplog, ranks_saved, old_format):
    """Resumed on more ranks than saved, or from a file of rank 0's states alone (before
    per-rank files): the extra rank's generators are left as they are, and it is logged."""
    last = _last_checkpoint(tmp_path / "last", _optimizer())
    states = [rng_state() for _ in range(ranks_saved)]
    torch.save(states[0] if old_format else {"ranks": states}, last / RNG_FILE)
    fresh = _optimizer()  # built first: a new layer's initialisation draws from torch's RNG
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    expected = _draws()
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    with caplog.at_level("WARNING"):
        load_last(last, _FakeAsr(), fresh, rank=ranks_saved)  # type: ignore[arg-type]
    assert _draws() == expected
    assert f"no RNG states for rank {ranks_saved}" in caplog.text


def test_a_missing_rng_file_resumes_without_it(tmp_path):
    last = _last_checkpoint(tmp_path / "last", _optimizer())
    (last / RNG_FILE).unlink()
    assert load_last(last, _FakeAsr(), _optimizer()).step == 7  # type: ignore[arg-type]


def test_optimizer_state_is_rekeyed_between_indices_and_parameter_names(tmp_path):
    """DDP's optimizer.pt is keyed by index, FSDP's by name: either resumes under the other."""
    by_index = _optimizer().state_dict()
    names = ["weight", "bias"]  # nn.Linear registers weight, then bias: indices 0 and 1
    by_name = rekey_optimizer_state(by_index, names, by_name=True)
    assert by_name["param_groups"][0]["params"] == names
    for index, name in enumerate(names):
        assert torch.equal(by_name["state"][name]["exp_avg"], by_index["state"][index]["exp_avg"])
    assert rekey_optimizer_state(by_name, names, by_name=True) is by_name

    # A name-keyed file (FSDP) into an unsharded run's optimizer.
    last = _last_checkpoint(tmp_path / "last", _optimizer())
    fresh = _optimizer()
    torch.save(by_name, last / OPTIMIZER_FILE)
    load_last(last, _FakeAsr(), fresh)  # type: ignore[arg-type]
    loaded = fresh.state_dict()
    assert loaded["param_groups"] == by_index["param_groups"]
    assert all(
        torch.equal(loaded["state"][i]["exp_avg_sq"], by_index["state"][i]["exp_avg_sq"])
        for i in (0, 1)
    )
    with pytest.raises(ValueError, match="2 parameters, the model trains 1"):
        rekey_optimizer_state(by_index, ["weight"], by_name=True)
